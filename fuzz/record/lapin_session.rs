//! A lapin session recorded for the fuzz seeds (`fuzz/seeds/connection/lapin-0`). Not
//! built by the workspace: put it in a scratch crate with `lapin` (features "tokio") and
//! `tokio`, then run it through `record_traffic.py` as README.md shows.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "lq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x".into(), AMQPValue::LongLongInt(7));
    for i in 0..3u8 {
        ch.basic_publish(
            "".into(),
            "lq".into(),
            BasicPublishOptions::default(),
            &[b'm', i],
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers.clone()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let g = ch
        .basic_get("lq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    g.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let consumer = ch
        .basic_consume(
            "lq".into(),
            "lc".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    consumer.set_delegate(move |d: lapin::message::DeliveryResult| {
        let _ = tx.send(d);
        std::future::ready(())
    });
    let d1 = rx.recv().await.unwrap().unwrap().unwrap();
    d1.nack(BasicNackOptions {
        requeue: true,
        multiple: false,
    })
    .await
    .unwrap();
    let d2 = rx.recv().await.unwrap().unwrap().unwrap();
    d2.ack(BasicAckOptions { multiple: true }).await.unwrap();
    ch.basic_cancel("lc".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    ch.exchange_declare(
        "lx".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "lq".into(),
        "lx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "lx".into(),
        "".into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"fan",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    ch.queue_purge("lq".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    ch.queue_delete("lq".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete("lx".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let bad = conn.create_channel().await.unwrap();
    let _ = bad
        .queue_declare(
            "nope".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    ch.close(200, "bye".into()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}
