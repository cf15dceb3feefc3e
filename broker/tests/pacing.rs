//! A TCP client that streams frames, each in its own write, and then stops or
//! turns to request and response. Such a stream is what makes the broker batch
//! its reads (the `pacing` module raises the socket's receive low-water mark and
//! reads once per hold; its own tests drive that on a socket directly): whether a
//! given run batches depends on timing, and either way every frame must be read
//! and every request answered.

mod common;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, queue};
use common::{encode, method_frame, open1, queue_decl, unique, Raw, Target};

/// One message the way Go's amqp091 sends it: method, header and body frames of
/// at most `chunk` octets, each to be written on its own. Encoded up front, so that
/// the client writes as fast as a real one does.
fn publish_frames(queue: &str, body: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let publish = basic::Publish {
        routing_key: queue.into(),
        ..Default::default()
    };
    let header = AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: Default::default(),
        },
    );
    let mut frames = vec![method_frame(1, publish), encode(&header)];
    frames.extend(
        body.chunks(chunk)
            .map(|part| encode(&AMQPFrame::Body(1, part.to_vec()))),
    );
    frames
}

async fn stream(c: &mut Raw, messages: &[Vec<Vec<u8>>]) {
    for frames in messages {
        for frame in frames {
            c.send_raw(frame).await;
        }
    }
}

async fn depth(c: &mut Raw, queue: &str) -> u32 {
    let passive = queue::Declare {
        passive: true,
        ..queue_decl(queue)
    };
    c.queue_declare(1, passive).await.message_count
}

// Two workers, so that the broker reads while the client is still writing, as it
// does with a client in another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_is_read_to_its_last_frame() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("pacing");
    c.declare_exclusive(1, &q).await;
    let messages: Vec<_> = (0..10_000u32)
        .map(|i| publish_frames(&q, &i.to_be_bytes(), 1024))
        .collect();
    let mut sent = 0;
    for round in 1..=3u32 {
        stream(&mut c, &messages).await;
        sent += 10_000;
        // The passive declare is the last thing sent: it is answered only once
        // every frame before it has been read, and a byte left in the socket with
        // no read to come would leave it unanswered (and the call would panic).
        assert_eq!(depth(&mut c, &q).await, sent, "round {round}");
        // A client waiting for each answer is answered each time.
        for _ in 0..50 {
            assert_eq!(depth(&mut c, &q).await, sent);
        }
    }
    // The messages arrived whole and in order.
    for i in 0..sent {
        let m = c.get(1, &q, true).await.expect("a message");
        assert_eq!(m.body, (i % 10_000).to_be_bytes());
    }
    c.close().await;
    t.stop().await;
}

/// A stream of messages whose bodies span several frames, so that frames are cut
/// across the batches read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_in_a_stream_arrive_whole() {
    let t = Target::start().await;
    let mut c = open1(&t).await;
    let q = unique("pacing-large");
    c.declare_exclusive(1, &q).await;
    let chunk = c.tune.frame_max as usize - 8;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    // Small publishes first, so that the large ones come while reads are batched.
    let small: Vec<_> = (0..5_000u32)
        .map(|i| publish_frames(&q, &i.to_be_bytes(), 1024))
        .collect();
    stream(&mut c, &small).await;
    let large = publish_frames(&q, &body, chunk);
    stream(&mut c, &vec![large; 40]).await;
    assert_eq!(depth(&mut c, &q).await, 5_040);
    for i in 0..5_000u32 {
        let m = c.get(1, &q, true).await.expect("a message");
        assert_eq!(m.body, i.to_be_bytes());
    }
    for _ in 0..40 {
        let m = c.get(1, &q, true).await.expect("a message");
        assert!(m.body == body, "a message came back altered");
    }
    c.close().await;
    t.stop().await;
}

/// While a connection's task polls its socket for a client's next message, the
/// runtime's other worker sleeps. Each time a task goes back to the runtime with
/// nothing else to run, tokio wakes a parked worker (the last searching worker
/// hands work on as it finds it), and that worker then runs on the CPU the
/// client needs: a task that went back between every two polls woke it tens of
/// thousands of times a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_connection_lets_the_other_worker_sleep() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("note: one CPU, where Warren does not poll; skipped");
        return;
    }
    let builder = warren_broker::Broker::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .busy_wait(std::time::Duration::from_secs(30));
    let Some(t) = Target::start_with(builder).await else {
        return;
    };
    let mut c = open1(&t).await;
    let q = unique("polling");
    c.declare_exclusive(1, &q).await;
    assert_eq!(depth(&mut c, &q).await, 0);
    // The connection polls for 30 s after that answer; the test's own thread is
    // not one of the runtime's workers, so sleeping here leaves them alone.
    let metrics = tokio::runtime::Handle::current().metrics();
    let parks = || {
        (0..metrics.num_workers())
            .map(|w| metrics.worker_park_count(w))
            .sum::<u64>()
    };
    let before = parks();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let woken = parks() - before;
    // Going back to the runtime at most once per 200 µs of polling makes at most
    // 500 wake-ups in 100 ms, and fewer on a slower machine.
    assert!(
        woken < 1_000,
        "the other worker was woken {woken} times in 100 ms of polling"
    );
    assert_eq!(depth(&mut c, &q).await, 0);
    t.stop().await;
}
