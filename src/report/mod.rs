//! `pgbak status`.
