//! Counters every front end feeds and `GET /metrics` prints in
//! Prometheus' text format: private queries by outcome, ε charged, answer
//! latency, backend failures, open connections per front end. Atomics
//! only, so counting never waits on a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// How a private query ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Charged and answered.
    Answered,
    /// Answered from a kept release at no cost.
    Repeated,
    /// Refused before anything was charged.
    Refused,
    /// Charged, then the backend or the release failed.
    Failed,
}

const OUTCOMES: [(QueryOutcome, &str); 4] = [
    (QueryOutcome::Answered, "answered"),
    (QueryOutcome::Repeated, "repeated"),
    (QueryOutcome::Refused, "refused"),
    (QueryOutcome::Failed, "failed"),
];

/// A front end whose open connections are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontEnd {
    /// The PostgreSQL wire protocol.
    Wire,
    /// The HTTP/JSON API.
    Http,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 4],
    /// ε charged, in nano-ε (the ledger's unit).
    charged_nano_epsilon: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    open: [AtomicU64; 2],
}

/// Holds one open connection in the count until dropped.
#[derive(Debug)]
pub struct OpenConnection<'a> {
    gauge: &'a AtomicU64,
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// Counts one private query: how it ended, what it charged, how long
    /// it took from plan to answer.
    pub fn query(&self, outcome: QueryOutcome, epsilon: f64, elapsed: Duration) {
        let i = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.outcomes[i].fetch_add(1, Relaxed);
        if epsilon > 0.0 {
            self.charged_nano_epsilon
                .fetch_add((epsilon * 1e9).round() as u64, Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// Counts a connection of `front` as open until the guard drops.
    pub fn open(&self, front: FrontEnd) -> OpenConnection<'_> {
        let gauge = &self.open[front as usize];
        gauge.fetch_add(1, Relaxed);
        OpenConnection { gauge }
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP dpgate_queries_total Private queries by outcome.\n# TYPE dpgate_queries_total counter\n");
        for (i, (_, name)) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                s,
                "dpgate_queries_total{{outcome=\"{name}\"}} {}",
                self.outcomes[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP dpgate_backend_errors_total Private queries charged whose backend query or release failed.\n# TYPE dpgate_backend_errors_total counter\ndpgate_backend_errors_total {}",
            self.outcomes[3].load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP dpgate_epsilon_charged_total ε charged to analysts.\n# TYPE dpgate_epsilon_charged_total counter\ndpgate_epsilon_charged_total {}",
            self.charged_nano_epsilon.load(Relaxed) as f64 / 1e9
        );
        s.push_str("# HELP dpgate_query_seconds Time from plan to answer of private queries.\n# TYPE dpgate_query_seconds histogram\n");
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                s,
                "dpgate_query_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(s, "dpgate_query_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            s,
            "dpgate_query_seconds_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "dpgate_query_seconds_count {count}");
        s.push_str("# HELP dpgate_open_connections Open client connections per front end.\n# TYPE dpgate_open_connections gauge\n");
        for (front, name) in [(FrontEnd::Wire, "wire"), (FrontEnd::Http, "http")] {
            let _ = writeln!(
                s,
                "dpgate_open_connections{{front_end=\"{name}\"}} {}",
                self.open[front as usize].load(Relaxed)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let m = Metrics::default();
        m.query(QueryOutcome::Answered, 0.1, Duration::from_millis(3));
        m.query(QueryOutcome::Refused, 0.0, Duration::from_millis(30));
        let open = m.open(FrontEnd::Http);
        let text = m.render();
        assert!(text.contains("dpgate_queries_total{outcome=\"answered\"} 1"));
        assert!(text.contains("dpgate_queries_total{outcome=\"refused\"} 1"));
        assert!(text.contains("dpgate_epsilon_charged_total 0.1\n"));
        assert!(text.contains("dpgate_query_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("dpgate_query_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("dpgate_query_seconds_count 2"));
        assert!(text.contains("dpgate_open_connections{front_end=\"http\"} 1"));
        drop(open);
        assert!(m
            .render()
            .contains("dpgate_open_connections{front_end=\"http\"} 0"));
    }
}
