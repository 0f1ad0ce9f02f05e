//! Services: what a router's chain ends in.

pub mod echo;
pub mod health;
pub mod load_balancer;
pub mod timed_body;
pub mod transport;

pub use echo::{serve_echo, EchoService, ECHO_SERVICE};
pub use load_balancer::{LoadBalancer, Server, UpstreamUsed};
pub use transport::{Transport, TransportCache};
