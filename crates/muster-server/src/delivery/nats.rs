//! The NATS JetStream publisher.
