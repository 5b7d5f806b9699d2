//! The controller's Prometheus metrics (`GET /metrics`): requests and
//! latency per route, sites by status and by release, the highest bundle
//! serial, whether the last sync succeeded.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::status::Health;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// The controller's Prometheus metrics.
#[derive(Debug)]
pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    sites: Family<StatusLabels, Gauge>,
    versions: Family<VersionLabels, Gauge>,
    serial: Gauge,
    sync_ok: Gauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("touchline");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
            ])
        });
        let sites = Family::<StatusLabels, Gauge>::default();
        let versions = Family::<VersionLabels, Gauge>::default();
        let serial = Gauge::default();
        let sync_ok = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register("sites", "Sites by status", sites.clone());
        registry.register(
            "sites_by_version",
            "Sites by running release",
            versions.clone(),
        );
        registry.register(
            "bundle_serial",
            "Highest published bundle serial",
            serial.clone(),
        );
        registry.register(
            "last_sync_ok",
            "1 when the last sync of the manifests repository succeeded",
            sync_ok.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            sites,
            versions,
            serial,
            sync_ok,
        }
    }
}

impl HttpMetrics {
    /// Counts a request and its latency under its matched route.
    pub fn observe(&self, route: String, method: String, status: u16, elapsed: Duration) {
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// The OpenMetrics text, with the fleet gauges set from `views`, the
    /// highest published `serial` and whether the last sync succeeded.
    pub fn render(
        &self,
        views: &[(Health, Option<String>)],
        serial: u64,
        sync_ok: bool,
    ) -> Result<String, std::fmt::Error> {
        self.sites.clear();
        self.versions.clear();
        for (health, version) in views {
            self.sites
                .get_or_create(&StatusLabels {
                    status: health.as_str().to_owned(),
                })
                .inc();
            if let Some(ver) = version {
                self.versions
                    .get_or_create(&VersionLabels {
                        version: ver.clone(),
                    })
                    .inc();
            }
        }
        self.serial.set(i64::try_from(serial).unwrap_or(i64::MAX));
        self.sync_ok.set(i64::from(sync_ok));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
