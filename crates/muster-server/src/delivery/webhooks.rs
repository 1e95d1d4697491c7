//! Webhook deliveries (Standard Webhooks signing, SSRF-safe client).
