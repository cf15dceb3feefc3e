//! The log's tests: records round trip; torn, corrupt and cut-off writes and
//! compactions recover without losing what was durable.
use std::collections::BTreeMap;

use amq_protocol::types::FieldTable;
use bytes::Bytes;

use super::recovery::{read_record, segment_path};
use super::*;
use amq_protocol::types::AMQPValue;

fn publish(id: u64, queue: &str) -> Record {
    Record::Publish {
        id,
        vhost: "/".into(),
        queues: vec![queue.into()],
        exchange: "".into(),
        routing_key: queue.into(),
        header: Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 2]),
        body: Bytes::from(format!("m{id}")),
        dead_lettered: false,
    }
}

#[test]
fn borrowed_publish_is_the_same_record() {
    let rec = publish(7, "q");
    let Record::Publish { header, body, .. } = &rec else {
        unreachable!()
    };
    let (mut owned, mut borrowed) = (Vec::new(), Vec::new());
    rec.encode(&mut owned);
    framed(&mut borrowed, |w| {
        PublishRef {
            id: 7,
            vhost: "/",
            queues: &["q".to_owned()],
            exchange: "",
            routing_key: "q",
            header: [&header[..12], &header[12..]],
            body,
            dead_lettered: false,
        }
        .write(w)
    });
    assert_eq!(owned, borrowed);
}

/// A dead-lettered message's mark has a record type of its own: a publish
/// without it is byte for byte what versions before the mark wrote (type 7),
/// so their logs read as messages published by clients.
#[test]
fn dead_lettered_publish_round_trips_and_old_publishes_read_unmarked() {
    let plain = publish(3, "q");
    let mut bytes = Vec::new();
    plain.encode(&mut bytes);
    assert_eq!(bytes[8], 7, "a plain publish keeps the old record type");
    assert_eq!(Record::decode(&bytes[8..]), Some(plain.clone()));
    let mut marked = plain;
    if let Record::Publish { dead_lettered, .. } = &mut marked {
        *dead_lettered = true;
    }
    let mut bytes = Vec::new();
    marked.encode(&mut bytes);
    assert_eq!(bytes[8], 14);
    assert_eq!(Record::decode(&bytes[8..]), Some(marked));
}

#[test]
fn records_round_trip() {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(5));
    let records = vec![
        Record::ExchangeDeclare {
            vhost: "/".into(),
            name: "x".into(),
            kind: "topic".into(),
            auto_delete: true,
            internal: false,
            arguments: args.clone(),
        },
        Record::QueueDeclare {
            vhost: "/".into(),
            name: "q".into(),
            auto_delete: false,
            arguments: args,
        },
        Record::Bind {
            vhost: "/".into(),
            source: "x".into(),
            to_exchange: false,
            destination: "q".into(),
            routing_key: "a.#".into(),
            arguments: FieldTable::default(),
        },
        publish(7, "q"),
        Record::Delivered {
            id: 7,
            vhost: "/".into(),
            queue: "q".into(),
        },
        Record::Remove {
            id: 7,
            vhost: "/".into(),
            queue: "q".into(),
        },
        Record::VhostReset { vhost: "v".into() },
        begin("v", 3),
        Record::SnapshotAbandoned { vhost: "v".into() },
        Record::StreamStart {
            vhost: "/".into(),
            queue: "s".into(),
            first: 42,
        },
    ];
    let mut buf = Vec::new();
    for r in &records {
        r.encode(&mut buf);
    }
    let mut pos = 0;
    for r in &records {
        let (got, next) = read_record(&buf, pos).unwrap();
        assert_eq!(got.as_ref(), Some(r));
        pos = next;
    }
    assert_eq!(pos, buf.len());
}

fn write_log(dir: &Path, records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in records {
        r.encode(&mut buf);
    }
    fs::write(segment_path(dir, 1), &buf).unwrap();
    buf
}

fn queue(name: &str) -> Record {
    Record::QueueDeclare {
        vhost: "/".into(),
        name: name.into(),
        auto_delete: false,
        arguments: FieldTable::default(),
    }
}

fn ids(r: &Recovered, q: &str) -> Vec<u64> {
    r.vhosts["/"].queues[q].messages.keys().copied().collect()
}

#[test]
fn torn_tail_is_cut_off_and_the_rest_kept() {
    let dir = tempdir("torn");
    let full = write_log(&dir, &[queue("q"), publish(1, "q"), publish(2, "q")]);
    let cut = full.len() - 3;
    fs::write(segment_path(&dir, 1), &full[..cut]).unwrap();
    let r = recover(&dir).unwrap();
    assert_eq!(ids(&r, "q"), vec![1]);
    assert_eq!(r.repairs.len(), 1, "{:?}", r.repairs);
    assert!(r.repairs[0].contains("torn tail"), "{:?}", r.repairs);
    let len = fs::metadata(segment_path(&dir, 1)).unwrap().len();
    assert!(len < cut as u64, "the torn tail is truncated away");
    assert!(recover(&dir).unwrap().repairs.is_empty());
}

#[test]
fn corrupt_record_in_the_middle_is_skipped_and_reported() {
    let dir = tempdir("middle");
    let mut data = write_log(&dir, &[queue("q"), publish(1, "q"), publish(2, "q")]);
    let mut first = Vec::new();
    queue("q").encode(&mut first);
    data[first.len() + 12] ^= 0xff;
    fs::write(segment_path(&dir, 1), &data).unwrap();
    let r = recover(&dir).unwrap();
    assert_eq!(ids(&r, "q"), vec![2]);
    assert!(
        r.repairs[0].contains("corrupt record at offset"),
        "{:?}",
        r.repairs
    );
}

#[test]
fn removed_and_deleted_messages_do_not_come_back() {
    let dir = tempdir("removed");
    write_log(
        &dir,
        &[
            queue("q"),
            queue("r"),
            publish(1, "q"),
            publish(2, "q"),
            Record::Remove {
                id: 1,
                vhost: "/".into(),
                queue: "q".into(),
            },
            publish(3, "r"),
            Record::QueueDelete {
                vhost: "/".into(),
                name: "r".into(),
            },
        ],
    );
    let r = recover(&dir).unwrap();
    assert_eq!(ids(&r, "q"), vec![2]);
    assert!(!r.vhosts["/"].queues.contains_key("r"));
    assert_eq!(r.vhosts["/"].messages.len(), 1);
    assert_eq!(r.next_id, 4);
}

fn in_vhost(vhost: &str, mut rec: Record) -> Record {
    match &mut rec {
        Record::QueueDeclare { vhost: v, .. }
        | Record::Publish { vhost: v, .. }
        | Record::Remove { vhost: v, .. } => *v = vhost.into(),
        _ => unreachable!("not used in these tests"),
    }
    rec
}

fn remove(id: u64, queue: &str) -> Record {
    Record::Remove {
        id,
        vhost: "/".into(),
        queue: queue.into(),
    }
}

fn begin(vhost: &str, records: u64) -> Record {
    Record::SnapshotBegin {
        vhost: vhost.into(),
        records,
    }
}

/// What a test compares of recovered state: every vhost's exchanges,
/// queues with their (message, delivered) lists, bindings as a set, and
/// the bodies of held messages.
fn summary(r: &Recovered) -> String {
    let mut out = String::new();
    for (name, v) in &r.vhosts {
        let mut bindings: Vec<String> = v.bindings.iter().map(|b| format!("{b:?}")).collect();
        bindings.sort();
        let queues: Vec<(&String, Vec<(&u64, &bool)>)> = v
            .queues
            .iter()
            .map(|(n, q)| (n, q.messages.iter().collect()))
            .collect();
        let bodies: BTreeMap<&u64, &Bytes> =
            v.messages.iter().map(|(id, m)| (id, &m.body)).collect();
        out += &format!(
            "{name}: {:?} {queues:?} {bindings:?} {bodies:?}\n",
            v.exchanges
        );
    }
    out
}

/// The old log of a compaction: two vhosts' history, with an acked and a
/// delivered message.
fn history() -> Vec<Record> {
    vec![
        Record::ExchangeDeclare {
            vhost: "/".into(),
            name: "x".into(),
            kind: "direct".into(),
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        },
        queue("q"),
        Record::Bind {
            vhost: "/".into(),
            source: "x".into(),
            to_exchange: false,
            destination: "q".into(),
            routing_key: "k".into(),
            arguments: FieldTable::default(),
        },
        publish(1, "q"),
        publish(2, "q"),
        publish(3, "q"),
        remove(1, "q"),
        Record::Delivered {
            id: 2,
            vhost: "/".into(),
            queue: "q".into(),
        },
        in_vhost("v", queue("vq")),
        in_vhost("v", publish(4, "vq")),
    ]
}

/// The new segment of that compaction as the writer lays it out: each
/// vhost's snapshot (true) is written under its lock, so other vhosts'
/// changes interleave with it, and its own come before and after.
fn compaction() -> Vec<(Record, bool)> {
    let h = history();
    vec![
        (publish(5, "q"), false),
        (begin("/", 7), true),
        (h[0].clone(), true),
        (queue("q"), true),
        (in_vhost("v", publish(6, "vq")), false),
        (h[2].clone(), true),
        (publish(2, "q"), true),
        (in_vhost("v", remove(4, "vq")), false),
        (publish(3, "q"), true),
        (publish(5, "q"), true),
        (h[7].clone(), true),
        (publish(7, "q"), false),
        (begin("v", 2), true),
        (in_vhost("v", queue("vq")), true),
        (in_vhost("v", publish(6, "vq")), true),
        (in_vhost("v", publish(8, "vq")), false),
        (remove(3, "q"), false),
    ]
}

/// A crash at every byte of a compaction's new segment: recovery always
/// yields the state of the changes made up to that point, never less (a
/// snapshot cut off is ignored, the old segments still hold its state) and
/// never more.
#[test]
fn a_compaction_cut_off_anywhere_loses_nothing() {
    let dir = tempdir("cut");
    let expected_dir = tempdir("cut-expected");
    write_log(&dir, &history());
    let mut full = Vec::new();
    let mut ends = Vec::new();
    for (rec, _) in compaction() {
        rec.encode(&mut full);
        ends.push(full.len());
    }
    for cut in 0..=full.len() {
        fs::write(segment_path(&dir, 2), &full[..cut]).unwrap();
        let got = recover(&dir).unwrap();
        // The same changes, without any snapshot.
        let mut logical = history();
        logical.extend(
            compaction()
                .into_iter()
                .zip(&ends)
                .filter(|((_, snap), &end)| !snap && end <= cut)
                .map(|((rec, _), _)| rec),
        );
        write_log(&expected_dir, &logical);
        let want = recover(&expected_dir).unwrap();
        assert_eq!(
            summary(&got),
            summary(&want),
            "cut at byte {cut} of {}",
            full.len()
        );
        // "/"'s snapshot is records 1..=10 of the segment, "v"'s 12..=14.
        let cut_off = |first: usize, last: usize| ends[first] <= cut && cut < ends[last];
        let abandoned: Vec<&str> = [("/", cut_off(1, 10)), ("v", cut_off(12, 14))]
            .into_iter()
            .filter_map(|(v, cut)| cut.then_some(v))
            .collect();
        assert_eq!(got.abandoned, abandoned, "cut at byte {cut}");
    }
}

/// After a cut-off snapshot the vhost's next records are its own again,
/// whether the log is reopened (after `kill -9`) or thawed (after
/// `Broker::crash`), rather than read as the rest of the snapshot.
#[test]
fn records_after_a_cut_off_snapshot_are_not_taken_for_its_rest() {
    let dir = tempdir("abandoned");
    write_log(&dir, &history());
    let mut cut = Vec::new();
    for (rec, _) in &compaction()[..7] {
        rec.encode(&mut cut);
    }
    fs::write(segment_path(&dir, 2), &cut).unwrap();
    let (store, recovered) = Store::open(&dir).unwrap();
    assert_eq!(recovered.abandoned, ["/"]);
    assert_eq!(ids(&recovered, "q"), [2, 3, 5]);
    store.append(&publish(9, "q"));
    // Another compaction, cut off by a power cut: its start reached the
    // disk, the rest did not.
    store.append(&begin("/", 3));
    store.append(&queue("q"));
    store.flush();
    store.freeze();
    store.append(&publish(2, "q"));
    let recovered = recover(&dir).unwrap();
    assert_eq!(recovered.abandoned, ["/"]);
    assert_eq!(ids(&recovered, "q"), [2, 3, 5, 9]);
    store.thaw(&recovered.abandoned);
    store.append(&publish(10, "q"));
    store.flush();
    store.close();
    let recovered = recover(&dir).unwrap();
    assert!(recovered.abandoned.is_empty());
    assert_eq!(ids(&recovered, "q"), [2, 3, 5, 9, 10]);
}

/// A corrupt record inside a snapshot whose old segments are gone costs
/// that record, not the whole snapshot.
#[test]
fn a_corrupt_record_in_a_whole_snapshot_costs_only_that_record() {
    let dir = tempdir("corrupt-snapshot");
    let mut data = write_log(
        &dir,
        &[
            begin("/", 4),
            queue("q"),
            publish(1, "q"),
            publish(2, "q"),
            publish(3, "q"),
        ],
    );
    let at = data
        .windows(2)
        .position(|w| w == b"m2")
        .expect("m2 is in the log");
    data[at] ^= 0xff;
    fs::write(segment_path(&dir, 1), &data).unwrap();
    let r = recover(&dir).unwrap();
    assert_eq!(ids(&r, "q"), [1, 3]);
    assert!(r.abandoned.is_empty());
}

/// Logs written before snapshots were counted reset the vhost outright.
#[test]
fn a_legacy_reset_still_replaces_the_vhost() {
    let dir = tempdir("legacy");
    write_log(
        &dir,
        &[
            queue("q"),
            publish(1, "q"),
            publish(2, "q"),
            Record::VhostReset { vhost: "/".into() },
            queue("q"),
            publish(2, "q"),
        ],
    );
    assert_eq!(ids(&recover(&dir).unwrap(), "q"), [2]);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warren-store-{name}-{}-{}",
        std::process::id(),
        crate::names::random_token()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bytes of the log's segments, as a reader of the files sees them.
fn log_len(dir: &Path) -> u64 {
    segments(dir)
        .unwrap()
        .iter()
        .map(|&n| fs::metadata(segment_path(dir, n)).map_or(0, |m| m.len()))
        .sum()
}

/// Polls until `done`; the deadline only turns a hang into a failure.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A fresh store in a fresh directory, with queue "q" declared and durable.
fn store_with_queue(name: &str) -> (PathBuf, Arc<Store>) {
    let dir = tempdir(name);
    let (store, _) = Store::open(&dir).unwrap();
    let declared = store.append(&queue("q"));
    eventually("the declare is durable", || store.durable_lsn() >= declared);
    (dir, store)
}

/// A record nobody waits for (an unconfirmed publish, an ack) is written at
/// once but not fsynced, as RabbitMQ's message store syncs only for the
/// confirms it owes: `kill -9`, which leaves the page cache to the kernel,
/// keeps it; a power cut loses it. A change of topology and a confirmed
/// publish are fsynced without delay, and survive both.
#[test]
fn only_what_something_waits_for_is_fsynced() {
    let (dir, store) = store_with_queue("sync-on-demand");
    let confirmed = store.append(&publish(1, "q"));
    store.want(confirmed);
    eventually("the confirmed publish is durable", || {
        store.durable_lsn() >= confirmed
    });
    let len = log_len(&dir);
    store.append(&publish(2, "q"));
    store.append(&remove(1, "q"));
    eventually("the writer wrote both", || {
        ids(&recover(&dir).unwrap(), "q") == [2]
    });
    assert_eq!(
        store.durable_lsn(),
        confirmed,
        "nothing was fsynced for them"
    );
    store.freeze();
    assert_eq!(
        log_len(&dir),
        len,
        "the power cut took what was not fsynced"
    );
    let recovered = recover(&dir).unwrap();
    assert_eq!(ids(&recovered, "q"), [1]);
    store.thaw(&recovered.abandoned);
    // The writer goes on from where the power cut left the file.
    store.append(&publish(3, "q"));
    store.flush();
    store.close();
    assert_eq!(ids(&recover(&dir).unwrap(), "q"), [1, 3]);
}

/// A confirm asked for after its record was written still gets its fsync.
#[test]
fn a_wait_for_what_is_already_written_is_fsynced() {
    let (dir, store) = store_with_queue("late-want");
    let declared = store.durable_lsn();
    let published = store.append(&publish(1, "q"));
    eventually("the writer wrote it", || {
        ids(&recover(&dir).unwrap(), "q") == [1]
    });
    assert_eq!(store.durable_lsn(), declared);
    store.want(published);
    eventually("it is durable", || store.durable_lsn() >= published);
    store.freeze();
    assert_eq!(ids(&recover(&dir).unwrap(), "q"), [1]);
    store.close();
}
