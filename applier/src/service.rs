//! The service's own `deploy/service.yaml` (see [`model::service`]): the applier reads it from
//! each release to start, stop and check the service.

pub use model::service::{
    ConfigSpec, SERVICE_YAML, ServiceSpec, ServiceSpecError, StopSpec, signal_number,
};
