//! Runs every program of `broker/examples/` that shows the test-double features
//! in a test of application code, so that CI keeps them true. Each example's
//! `run` is what its `main` runs.

#[allow(dead_code)]
#[path = "../examples/nacked_publisher.rs"]
mod nacked_publisher;
#[allow(dead_code)]
#[path = "../examples/retrying_consumer.rs"]
mod retrying_consumer;
#[allow(dead_code)]
#[path = "../examples/worker_survives_restart.rs"]
mod worker_survives_restart;

#[tokio::test]
async fn retrying_consumer() {
    retrying_consumer::run().await.unwrap();
}

#[tokio::test]
async fn nacked_publisher() {
    nacked_publisher::run().await.unwrap();
}

#[tokio::test]
async fn worker_survives_restart() {
    worker_survives_restart::run().await.unwrap();
}
