//! Metrics in the Prometheus text format, with the Prometheus org's client: one registry
//! built at startup, typed families with label structs, names in base units with the
//! `browserd_` prefix, and no session ids as labels. Counters move where things happen
//! (launch, termination, reaping); the session gauges are read from the registry when
//! scraped.

use browserd_proto::{SessionState, SessionType};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok`, or the error code that ended it.
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The route's template (`/kill/{id}`), never the path: ids are not labels.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    state: StateLabel,
    r#type: TypeLabel,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum StateLabel {
    starting,
    running,
    terminating,
    exited,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarmLabels {
    state: WarmState,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum WarmState {
    ready,
    starting,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum TypeLabel {
    browser,
    sandbox,
}

pub struct Metrics {
    registry: Registry,
    sessions: Family<SessionLabels, Gauge>,
    launches: Family<ResultLabel, Counter>,
    terminations: Family<ResultLabel, Counter>,
    launch_seconds: Histogram,
    kill_seconds: Histogram,
    orphans_reaped: Counter,
    strays_signalled: Counter,
    oom_killed: Counter,
    queue_depth: Gauge,
    warm: Family<WarmLabels, Gauge>,
    reloads: Gauge,
    event_subscribers: Gauge,
    event_subscribers_lagged: Counter,
    http_requests: Family<HttpLabels, Counter>,
    max_sessions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("browserd");
        let sessions = Family::<SessionLabels, Gauge>::default();
        registry.register(
            "sessions",
            "Sessions by state and type (exited ones while still listed)",
            sessions.clone(),
        );
        let launches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "launches",
            "Launch requests, by result (ok, or the error code)",
            launches.clone(),
        );
        let terminations = Family::<ResultLabel, Counter>::default();
        registry.register(
            "terminations",
            "Sessions a termination ended or failed to end, by result (ok, or the failure code)",
            terminations.clone(),
        );
        // 1 ms .. ~65 s.
        let launch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "launch_duration_seconds",
            "Time from a launch request to its session running (a browser: its endpoint answers)",
            launch_seconds.clone(),
        );
        let kill_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "kill_duration_seconds",
            "Time from a termination's start to every process of the session gone and reaped",
            kill_seconds.clone(),
        );
        let orphans_reaped = Counter::default();
        registry.register(
            "orphans_reaped",
            "Processes the daemon reaped that were not session leaders (re-parented to it)",
            orphans_reaped.clone(),
        );
        let strays_signalled = Counter::default();
        registry.register(
            "strays_signalled",
            "Signals sent to single processes outside their session's process group",
            strays_signalled.clone(),
        );
        let oom_killed = Counter::default();
        registry.register(
            "sessions_oom_killed",
            "Sessions that ended after the kernel killed a process of theirs for exceeding their memory_max (memory.events oom_kill)",
            oom_killed.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Launches waiting for a free slot",
            queue_depth.clone(),
        );
        let warm = Family::<WarmLabels, Gauge>::default();
        registry.register(
            "warm_browsers",
            "Warm browsers of the pool, ready to hand out or starting",
            warm.clone(),
        );
        let reloads = Gauge::default();
        registry.register(
            "reloads",
            "Times this daemon has re-executed itself in place",
            reloads.clone(),
        );
        let event_subscribers = Gauge::default();
        registry.register(
            "event_subscribers",
            "Event streams open now (watch connections and /v1/events)",
            event_subscribers.clone(),
        );
        let event_subscribers_lagged = Counter::default();
        registry.register(
            "event_subscribers_lagged",
            "Event subscribers dropped with `lagged` because they fell too far behind",
            event_subscribers_lagged.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let max_sessions = Gauge::default();
        registry.register(
            "max_sessions",
            "Most live sessions at once (max_sessions): the capacity the session gauges fill",
            max_sessions.clone(),
        );
        Metrics {
            registry,
            max_sessions,
            event_subscribers,
            event_subscribers_lagged,
            http_requests,
            sessions,
            launches,
            terminations,
            launch_seconds,
            kill_seconds,
            orphans_reaped,
            strays_signalled,
            oom_killed,
            queue_depth,
            warm,
            reloads,
        }
    }
}

impl Metrics {
    /// A launch ended: `Ok(took)` once running, or the error code.
    pub fn launched(&self, outcome: Result<Duration, &str>) {
        let result = match outcome {
            Ok(took) => {
                self.launch_seconds.observe(took.as_secs_f64());
                "ok"
            }
            Err(code) => code,
        };
        self.launches
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// A termination ended a session (`Ok(took)`) or failed for one with `code`.
    pub fn terminated(&self, outcome: Result<Duration, &str>) {
        let result = match outcome {
            Ok(took) => {
                self.kill_seconds.observe(took.as_secs_f64());
                "ok"
            }
            Err(code) => code,
        };
        self.terminations
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn orphans_reaped(&self, count: u64) {
        self.orphans_reaped.inc_by(count);
    }

    pub fn stray_signalled(&self) {
        self.strays_signalled.inc();
    }

    pub fn session_oom_killed(&self) {
        self.oom_killed.inc();
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// An event stream opened; the guard counts it until dropped.
    pub fn event_subscriber(&self) -> SubscriberGauge {
        self.event_subscribers.inc();
        SubscriberGauge(self.event_subscribers.clone())
    }

    pub fn event_subscriber_lagged(&self) {
        self.event_subscribers_lagged.inc();
    }

    /// An HTTP request was answered; `route` is the matched route's template.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    pub fn set_max_sessions(&self, max_sessions: u32) {
        self.max_sessions.set(i64::from(max_sessions));
    }

    pub fn set_warm(&self, ready: usize, starting: usize) {
        for (state, count) in [(WarmState::ready, ready), (WarmState::starting, starting)] {
            self.warm
                .get_or_create(&WarmLabels { state })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn set_reloads(&self, reloads: u64) {
        self.reloads.set(i64::try_from(reloads).unwrap_or(i64::MAX));
    }

    /// The text exposition, with the session gauges set from `counts`.
    pub fn encode(&self, counts: &[(SessionState, SessionType, u64)]) -> String {
        self.sessions.clear();
        for &(state, kind, count) in counts {
            let labels = SessionLabels {
                state: match state {
                    SessionState::Starting => StateLabel::starting,
                    SessionState::Running => StateLabel::running,
                    SessionState::Terminating => StateLabel::terminating,
                    SessionState::Exited => StateLabel::exited,
                },
                r#type: match kind {
                    SessionType::Browser => TypeLabel::browser,
                    SessionType::Sandbox => TypeLabel::sandbox,
                },
            };
            self.sessions
                .get_or_create(&labels)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Counts one open event stream while it lives.
pub struct SubscriberGauge(Gauge);

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_base_units_and_counts_what_happened() {
        let metrics = Metrics::default();
        metrics.launched(Ok(Duration::from_millis(3)));
        metrics.launched(Err("capacity"));
        metrics.terminated(Ok(Duration::from_millis(20)));
        metrics.terminated(Err("timeout"));
        metrics.orphans_reaped(2);
        metrics.http_request("GET", "/kill/{id}", 204);
        let subscriber = metrics.event_subscriber();
        metrics.event_subscriber_lagged();
        metrics.set_queue_depth(4);
        metrics.set_warm(2, 1);
        let text = metrics.encode(&[(SessionState::Running, SessionType::Browser, 3)]);
        for line in [
            "browserd_launches_total{result=\"ok\"} 1",
            "browserd_launches_total{result=\"capacity\"} 1",
            "browserd_terminations_total{result=\"timeout\"} 1",
            "browserd_orphans_reaped_total 2",
            "browserd_sessions{state=\"running\",type=\"browser\"} 3",
            "browserd_launch_duration_seconds_count 1",
            "browserd_http_requests_total{method=\"GET\",route=\"/kill/{id}\",status=\"204\"} 1",
            "browserd_event_subscribers 1",
            "browserd_event_subscribers_lagged_total 1",
            "browserd_queue_depth 4",
            "browserd_warm_browsers{state=\"ready\"} 2",
            "browserd_warm_browsers{state=\"starting\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        drop(subscriber);
        let text = metrics.encode(&[]);
        assert!(text.contains("browserd_event_subscribers 0"), "{text}");
    }
}
