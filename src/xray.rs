//! X-Ray subsegments for the deletion, sent to the X-Ray daemon that Lambda
//! runs beside the function when tracing is active.
//!
//! Spans with the target [`TARGET`] become subsegments: the deletion itself,
//! and inside it one subsegment per Query page and per BatchWriteItem call.
//! The deletion's parent is the function segment that Lambda names in the
//! invocation's trace header, which lambda_runtime puts in `_X_AMZN_TRACE_ID`
//! before each invocation. Nothing is sent unless AWS_XRAY_DAEMON_ADDRESS
//! names a daemon and the trace header marks the request as sampled.
//!
//! The daemon protocol is a UDP datagram of the header line
//! `{"format": "json", "version": 1}` and one segment document, as described
//! in "Sending trace data to AWS X-Ray" of the X-Ray developer guide.

use std::net::{SocketAddr, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The tracing target of the spans that become subsegments.
pub const TARGET: &str = "xray";

/// The header line of every datagram to the daemon.
const DAEMON_HEADER: &str = "{\"format\": \"json\", \"version\": 1}\n";

/// The parts of an X-Ray trace header that a subsegment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeader {
    /// `Root`: the trace id, such as `1-5759e988-bd862e3fe1be46a994272793`.
    pub trace_id: String,
    /// `Parent`: the id of the segment that the subsegments belong to.
    pub parent_id: String,
}

impl TraceHeader {
    /// Parses `Root=...;Parent=...;Sampled=1`. Returns None when a part is
    /// missing or the request is not sampled, because X-Ray drops the
    /// subsegments of unsampled traces anyway.
    pub fn parse_sampled(header: &str) -> Option<Self> {
        let mut trace_id = None;
        let mut parent_id = None;
        let mut sampled = false;
        for part in header.split(';') {
            match part.trim().split_once('=') {
                Some(("Root", value)) => trace_id = Some(value.to_owned()),
                Some(("Parent", value)) => parent_id = Some(value.to_owned()),
                Some(("Sampled", value)) => sampled = value == "1",
                _ => {}
            }
        }

        if !sampled {
            return None;
        }
        Some(Self {
            trace_id: trace_id?,
            parent_id: parent_id?,
        })
    }
}

/// Reads the daemon's UDP address from AWS_XRAY_DAEMON_ADDRESS, which is
/// `host:port`, or `tcp:host:port udp:host:port` with both protocols. Only
/// IP addresses are accepted, so the layer never resolves a name.
pub fn daemon_address(value: &str) -> Option<SocketAddr> {
    let udp = value
        .split_whitespace()
        .find_map(|part| part.strip_prefix("udp:"))
        .unwrap_or(value.trim());
    udp.parse().ok()
}

/// The layer that turns [`TARGET`] spans into subsegments.
pub struct XRayLayer {
    socket: UdpSocket,
    daemon: SocketAddr,
}

impl XRayLayer {
    /// Builds the layer when AWS_XRAY_DAEMON_ADDRESS names a daemon by IP
    /// address. Returns None otherwise, so that without Lambda's tracing the
    /// function sends nothing.
    pub fn from_env() -> Option<Self> {
        let daemon = daemon_address(&std::env::var("AWS_XRAY_DAEMON_ADDRESS").ok()?)?;
        Self::new(daemon)
    }

    /// Builds a layer that sends to `daemon`. Returns None when no local
    /// UDP socket can be bound.
    pub fn new(daemon: SocketAddr) -> Option<Self> {
        // A loopback daemon gets a loopback socket; any other, such as
        // Lambda's link-local daemon, gets the default interface.
        let local: SocketAddr = if daemon.ip().is_loopback() {
            "127.0.0.1:0".parse().ok()?
        } else {
            "0.0.0.0:0".parse().ok()?
        };
        let socket = UdpSocket::bind(local).ok()?;
        Some(Self { socket, daemon })
    }

    fn send(&self, document: &Value) {
        let datagram = format!("{DAEMON_HEADER}{document}");
        // Tracing is best effort: a lost datagram must not fail a deletion.
        let _ = self.socket.send_to(datagram.as_bytes(), self.daemon);
    }
}

/// A subsegment in progress, kept in its span's extensions.
#[derive(Debug)]
struct Subsegment {
    id: String,
    trace_id: String,
    parent_id: String,
    start_time: f64,
    name: &'static str,
    fields: SpanFields,
}

/// The span fields that a subsegment reports.
#[derive(Debug, Default)]
struct SpanFields {
    operation: Option<String>,
    table: Option<String>,
    /// Whether the work failed or was abandoned, which X-Ray shows as a fault.
    fault: bool,
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "operation" => self.operation = Some(value.to_owned()),
            "table" => self.table = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "fault" {
            self.fault = value;
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for XRayLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let Some(span) = context.span(id) else {
            return;
        };

        // The nearest enclosing subsegment is the parent. A span without
        // one starts under the function segment of the trace header.
        let enclosing = span.scope().skip(1).find_map(|ancestor| {
            let extensions = ancestor.extensions();
            extensions
                .get::<Subsegment>()
                .map(|parent| (parent.trace_id.clone(), parent.id.clone()))
        });
        let (trace_id, parent_id) = match enclosing {
            Some(ids) => ids,
            None => {
                let header = std::env::var("_X_AMZN_TRACE_ID").ok();
                let Some(header) = header.as_deref().and_then(TraceHeader::parse_sampled) else {
                    return;
                };
                (header.trace_id, header.parent_id)
            }
        };

        let mut fields = SpanFields::default();
        attributes.record(&mut fields);
        span.extensions_mut().insert(Subsegment {
            id: format!("{:016x}", fastrand::u64(..)),
            trace_id,
            parent_id,
            start_time: seconds_since_epoch(),
            name: attributes.metadata().name(),
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        let Some(span) = context.span(id) else {
            return;
        };
        if let Some(subsegment) = span.extensions_mut().get_mut::<Subsegment>() {
            values.record(&mut subsegment.fields);
        }
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        let Some(span) = context.span(&id) else {
            return;
        };
        let Some(subsegment) = span.extensions_mut().remove::<Subsegment>() else {
            return;
        };
        self.send(&document(&subsegment, seconds_since_epoch()));
    }
}

/// Builds the segment document of a finished subsegment.
fn document(subsegment: &Subsegment, end_time: f64) -> Value {
    let mut document = Map::new();
    document.insert("name".to_owned(), json!(subsegment.name));
    document.insert("id".to_owned(), json!(subsegment.id));
    document.insert("trace_id".to_owned(), json!(subsegment.trace_id));
    document.insert("parent_id".to_owned(), json!(subsegment.parent_id));
    document.insert("type".to_owned(), json!("subsegment"));
    document.insert("start_time".to_owned(), json!(subsegment.start_time));
    document.insert("end_time".to_owned(), json!(end_time));

    let fields = &subsegment.fields;
    if let Some(operation) = &fields.operation {
        // The aws namespace makes X-Ray show the call as one to DynamoDB.
        document.insert("namespace".to_owned(), json!("aws"));
        let mut aws = Map::new();
        aws.insert("operation".to_owned(), json!(operation));
        if let Some(table) = &fields.table {
            aws.insert("table_name".to_owned(), json!(table));
        }
        document.insert("aws".to_owned(), Value::Object(aws));
    }
    if fields.fault {
        document.insert("fault".to_owned(), json!(true));
    }
    Value::Object(document)
}

fn seconds_since_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// Returns whether a span or event belongs to the X-Ray layer.
pub fn is_xray(metadata: &Metadata<'_>) -> bool {
    metadata.target() == TARGET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_header_is_parsed() {
        let header = TraceHeader::parse_sampled(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        );

        assert_eq!(
            header,
            Some(TraceHeader {
                trace_id: "1-5759e988-bd862e3fe1be46a994272793".to_owned(),
                parent_id: "53995c3f42cd8ad8".to_owned(),
            })
        );
    }

    #[test]
    fn unsampled_or_partial_header_is_skipped() {
        for header in [
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "",
        ] {
            assert_eq!(TraceHeader::parse_sampled(header), None, "{header}");
        }
    }

    #[test]
    fn daemon_address_forms_are_read() {
        let expected: SocketAddr = "169.254.79.129:2000".parse().unwrap();

        assert_eq!(daemon_address("169.254.79.129:2000"), Some(expected));
        assert_eq!(
            daemon_address("tcp:169.254.79.129:2000 udp:169.254.79.129:2000"),
            Some(expected)
        );
        assert_eq!(daemon_address("xray.example:2000"), None);
        assert_eq!(daemon_address(""), None);
    }

    #[test]
    fn call_document_names_operation() {
        let subsegment = Subsegment {
            id: "0123456789abcdef".to_owned(),
            trace_id: "1-5759e988-bd862e3fe1be46a994272793".to_owned(),
            parent_id: "53995c3f42cd8ad8".to_owned(),
            start_time: 1_796_500_800.5,
            name: "DynamoDB",
            fields: SpanFields {
                operation: Some("BatchWriteItem".to_owned()),
                table: Some("agno_learnings".to_owned()),
                fault: true,
            },
        };

        let document = document(&subsegment, 1_796_500_800.75);

        assert_eq!(document["type"], "subsegment");
        assert_eq!(document["namespace"], "aws");
        assert_eq!(document["aws"]["operation"], "BatchWriteItem");
        assert_eq!(document["aws"]["table_name"], "agno_learnings");
        assert_eq!(document["parent_id"], "53995c3f42cd8ad8");
        assert_eq!(document["end_time"], 1_796_500_800.75);
        assert_eq!(document["fault"], true);
    }
}
