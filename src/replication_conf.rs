//! TODO-SKELETON replication_conf
