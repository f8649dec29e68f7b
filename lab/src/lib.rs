//! A loopback lab for pgreplica: PostgreSQL primary, Barman, sshd on 127.0.0.1.
