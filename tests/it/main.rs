//! scriptd's integration tests: one test binary (`cargo test --test it`), one module per
//! area, so SQLite, axum, teloxide and the rest are linked once instead of once per file.
//! Run one module with a filter: `cargo test --test it reliability_bulkheads`.
//!
//! - **API** (over real HTTP): `api_scripts` (CRUD, pagination, catalogs), `api_validation`
//!   (422 bodies), `api_abuse` (hostile requests), `api_accounts` (ownership, permissions,
//!   tokens), `api_logs` (client headers, no secrets), `api_connection_limits` (idle floods under a
//!   1,024 descriptor limit, stream caps), `api_https` (TLS and renewal), `api_proxy`
//!   (trusted proxies and the limiter), `explain` and `snoozes`, and
//!   `openapi_conformance` (answers checked against `docs/openapi.yaml`).
//! - **Status page**: `status_api` (the routes it stands on), `status_page` (headless
//!   Chromium).
//! - **Pipeline** (components against real peers): `pipeline_source`, `pipeline_components`,
//!   `pipeline_push`, `pipeline_telegram`, `pipeline_webhook`, `outbox_dispatch`,
//!   `outbox_dispatch_postgres`, `pipeline_postgres` (`scriptd run` on PostgreSQL).
//! - **Daemon end to end** (`scriptd run` as a child process): `daemon_e2e`, `flood_control`,
//!   `bench_pipeline`.
//! - **Reliability** (faults inflicted, see docs/reliability.md): `reliability`,
//!   `reliability_bulkheads`, `reliability_oversized`, `reliability_telegram` (`#[ignore]`d,
//!   slow; `.ci/run` runs it with `--ignored`), `fuzz_regressions`.
//! - **Schedules** (properties and a simulated year): `index_matches_naive`,
//!   `explain_matches_pipeline` (their seeds in `<module>.proptest-regressions` beside them),
//!   `dst_year`.
//! - **Store**: `store_migrations`, `store_replace`, `store_live`, `store_cli`, `store_postgres`,
//!   `store_postgres_live` and `outbox_conformance` (against a real PostgreSQL too).
//! - **Configuration and operations**: `config_layers`, `config_check_command`, `ops_health`,
//!   `ops_logging`, `ops_reload`, `ops_sighup`, `ops_unit_file`.
//! - **Packaging**: `packaging`; `test_packages` (scripts/test-packages matches what the tests
//!   run).
//!
//! Helpers live in `tests/support/` only (`crate::support`: real peers, the daemon, the API
//! in-process, log capture). Inputs found by path: `tests/fuzz-regressions/`,
//! `tests/openapi/validate.py`, `fuzz/checks.rs`.
//!
//! All tests share one process. What is process-wide: `ops_sighup` installs a SIGHUP
//! handler before signalling itself (nothing else listens for SIGHUP in-process);
//! `ops_health` installs the global metrics recorder (nothing else in-process counts stale
//! occurrences); the global tracing subscriber is `support::logs::capture_global`'s, off
//! except during `api_logs`. No test changes the environment, the working directory or the
//! umask.

#[path = "../support/mod.rs"]
mod support;

// API
mod api_abuse;
mod api_accounts;
mod api_calendars;
mod api_connection_limits;
mod api_https;
mod api_instances_postgres;
mod api_logs;
mod api_proxy;
mod api_scripts;
mod api_validation;
mod explain;
mod openapi_conformance;
mod snoozes;

// Status page
mod status_api;
mod status_page;

// Pipeline
mod outbox_conformance;
mod outbox_dispatch;
mod outbox_dispatch_postgres;
mod pipeline_components;
mod pipeline_postgres;
mod pipeline_push;
mod pipeline_source;
mod pipeline_telegram;
mod pipeline_webhook;

// Daemon end to end
mod bench_pipeline;
mod daemon_e2e;
mod flood_control;

// Reliability
mod fuzz_regressions;
mod reliability;
mod reliability_bulkheads;
mod reliability_oversized;
mod reliability_telegram;

// Schedules
mod dst_year;
mod explain_matches_pipeline;
mod index_matches_naive;

// Store
mod store_calendars;
mod store_cli;
mod store_conformance;
mod store_live;
mod store_migrations;
mod store_postgres;
mod store_postgres_live;
mod store_replace;

// Configuration and operations
mod config_check_command;
mod config_layers;
mod failover_postgres;
mod instances_postgres;
mod mqtt_tls;
mod ops_health;
mod ops_logging;
mod ops_reload;
mod ops_sighup;
mod ops_unit_file;
mod store_health;
mod store_instances;

// Packaging
mod packaging;
mod test_packages;
