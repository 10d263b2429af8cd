//! Attribute keys of the contract. trace-gen writes them, the agent adds
//! [`AGENT_NODE`], trace-sink reads them. Documented in the README (the attribute contract).

/// Resource attribute: the node the generator (the app) runs on.
/// OpenTelemetry semantic convention `k8s.node.name`.
pub const GENERATOR_NODE: &str = "k8s.node.name";

/// Resource attribute the agent inserts: the node of the agent that forwarded the span.
pub const AGENT_NODE: &str = "agent.node.name";

/// Resource attribute: a generator id, new for each trace-gen process start (a UUID v4).
pub const GENERATOR_ID: &str = "tracegen.generator.id";

/// Span attribute: the per-generator sequence number (int, from 1, strictly increasing).
pub const SEQUENCE: &str = "tracegen.seq";

/// Semantic convention `k8s.pod.name`.
pub const POD_NAME: &str = "k8s.pod.name";

/// Semantic convention `k8s.namespace.name`.
pub const NAMESPACE_NAME: &str = "k8s.namespace.name";

/// Semantic convention `service.name`.
pub const SERVICE_NAME: &str = "service.name";

/// Semantic convention `service.instance.id`: trace-gen sets it to the generator id too.
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
