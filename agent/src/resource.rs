//! Resource attributes of one traced process: service.name, process.*, host.name and
//! whatever OTEL_RESOURCE_ATTRIBUTES adds.

/// The resource of one traced process. Shared (Arc) by every span and metric it emits.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub pid: u32,
    pub service_name: String,
    /// Ordered key/value pairs, service.name first, exported as string attributes.
    pub attributes: Vec<(String, String)>,
}
