//! Running as a service: systemd notification and watchdog ([`systemd`]), configuration
//! reloads on SIGHUP ([`reload`]), the health registry behind `/healthz` and `/livez`
//! ([`health`]), the Prometheus metrics ([`telemetry`]) and logging ([`logging`]).

pub mod health;
pub mod logging;
pub mod reload;
pub mod systemd;
pub mod telemetry;
