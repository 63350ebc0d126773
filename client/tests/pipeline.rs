//! Round trips, erasures, corrupt shards and range reads of the data pipeline.

use bytes::Bytes;
use cairn_client::segment::{self, SegmentPos};
use cairn_client::{Error, Parallelism, decode_object, encode_object, read_object_range};
use cairn_crypto::{DataKey, ObjectCipher};
use cairn_proto::ShardId;
use cairn_proto::layout::Layout;
use proptest::prelude::*;

/// A small layout so that "segment - 1" and friends are quick: 4 blocks of
/// 4 KiB per segment, 4-of-6.
fn small(k: u16, n: u16) -> Layout {
    Layout { segment_size: 16 * 1024, block_size: 4 * 1024, k, n }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Stored {
    cipher: ObjectCipher,
    layout: Layout,
    size: u64,
    shards: Vec<Vec<Option<Bytes>>>,
    ids: Vec<Vec<ShardId>>,
}

fn store(plain: &[u8], layout: Layout, par: Parallelism) -> Stored {
    let cipher = ObjectCipher::new(&DataKey::generate(), [3; 16]);
    let mut shards = Vec::new();
    let mut ids = Vec::new();
    let summary = encode_object(plain, &cipher, layout, par, |seg| {
        assert_eq!(seg.shards.len(), usize::from(layout.n));
        for (s, id) in seg.shards.iter().zip(&seg.ids) {
            assert_eq!(ShardId::of(s), *id);
            assert_eq!(s.len(), seg.layout.shard_len() as usize);
        }
        shards.push(seg.shards.into_iter().map(Some).collect());
        ids.push(seg.ids);
        Ok(())
    })
    .expect("encode");
    assert_eq!(summary.size, plain.len() as u64);
    assert_eq!(summary.segments, layout.segment_count(plain.len() as u64));
    Stored { cipher, layout, size: plain.len() as u64, shards, ids }
}

fn load(s: &Stored) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    decode_object(
        &s.cipher,
        s.layout,
        s.size,
        &s.ids,
        |i| Ok(s.shards[i as usize].clone()),
        Parallelism::threads(2),
        &mut out,
    )?;
    Ok(out)
}

#[test]
fn round_trips_at_boundary_sizes_small_layout() {
    let l = small(4, 6);
    let seg = l.segment_size as usize;
    let blk = l.block_size as usize;
    for size in [0, 1, blk - 1, blk, blk + 1, seg - 1, seg, seg + 1, 3 * seg + 17] {
        let plain = data(size, size as u64);
        let s = store(&plain, l, Parallelism::threads(2));
        assert_eq!(load(&s).expect("decode"), plain, "size {size}");
    }
}

#[test]
fn round_trips_at_boundary_sizes_default_layout() {
    let l = Layout::default();
    let seg = l.segment_size as usize;
    let blk = l.block_size as usize;
    for size in [0, 1, blk - 1, blk, blk + 1, seg - 1, seg, seg + 1, 3 * seg + 17] {
        let plain = data(size, size as u64 + 1);
        let s = store(&plain, l, Parallelism::default());
        assert_eq!(load(&s).expect("decode"), plain, "size {size}");
    }
}

#[test]
fn single_thread_and_many_threads_give_identical_shards() {
    let l = small(3, 5);
    let plain = data(5 * l.segment_size as usize + 999, 9);
    let key = DataKey::generate();
    let collect = |par| {
        let cipher = ObjectCipher::new(&key, [1; 16]);
        let mut ids = Vec::new();
        encode_object(&plain[..], &cipher, l, par, |seg| {
            ids.push(seg.ids);
            Ok(())
        })
        .expect("encode");
        ids
    };
    assert_eq!(collect(Parallelism::threads(1)), collect(Parallelism { threads: 3, in_flight: 2 }));
}

/// All subsets of `0..n` with at most `m` elements.
fn subsets(n: usize, m: usize) -> Vec<Vec<usize>> {
    (0u32..1 << n)
        .filter(|b| b.count_ones() as usize <= m)
        .map(|b| (0..n).filter(|i| b & (1 << i) != 0).collect())
        .collect()
}

#[test]
fn decodes_with_every_combination_of_up_to_m_missing_shards() {
    for (k, n) in [(4u16, 6u16), (2, 5), (3, 4), (5, 8)] {
        let l = small(k, n);
        let plain = data(2 * l.segment_size as usize + 4097, u64::from(k * n));
        let s = store(&plain, l, Parallelism::threads(2));
        for missing in subsets(usize::from(n), usize::from(n - k)) {
            let mut t = Stored {
                cipher: s.cipher.clone(),
                layout: l,
                size: s.size,
                shards: s.shards.clone(),
                ids: s.ids.clone(),
            };
            for seg in &mut t.shards {
                for &i in &missing {
                    seg[i] = None;
                }
            }
            assert_eq!(load(&t).expect("decode"), plain, "k={k} n={n} missing {missing:?}");
        }
    }
}

#[test]
fn one_shard_too_many_missing_is_a_clear_error() {
    let l = small(4, 6);
    let plain = data(10_000, 5);
    let mut s = store(&plain, l, Parallelism::threads(1));
    for i in [0, 3, 5] {
        s.shards[0][i] = None;
    }
    let err = load(&s).expect_err("must fail");
    assert!(matches!(err, Error::NotEnoughShards { segment: 0, usable: 3, needed: 4, .. }), "{err}");
    assert!(err.to_string().contains("segment 0"));
}

#[test]
fn corrupt_shard_is_rejected_named_and_decode_goes_on() {
    let l = small(4, 6);
    let plain = data(3 * l.segment_size as usize, 6);
    let s = store(&plain, l, Parallelism::threads(1));
    let seg = 1usize;
    let mut shards = s.shards[seg].clone();
    let mut bad = shards[2].clone().expect("present").to_vec();
    bad[100] ^= 0x01;
    shards[2] = Some(Bytes::from(bad));
    let layout = l.segment(l.segment_len(s.size, seg as u64));
    let pos = SegmentPos { index: seg as u64, last: false };
    let d = segment::decode(&s.cipher, layout, pos, &shards, &s.ids[seg]).expect("decodes from the others");
    assert_eq!(d.bad_shards, vec![2]);
    assert_eq!(d.plaintext, &plain[seg * l.segment_size as usize..(seg + 1) * l.segment_size as usize]);

    // With two more shards gone, the corrupt one is named in the error.
    shards[4] = None;
    shards[5] = None;
    let err = segment::decode(&s.cipher, layout, pos, &shards, &s.ids[seg]).expect_err("3 usable");
    assert!(matches!(&err, Error::NotEnoughShards { bad, .. } if bad == &vec![2]), "{err}");
}

#[test]
fn wrong_data_key_is_an_error() {
    let l = small(4, 6);
    let plain = data(20_000, 7);
    let mut s = store(&plain, l, Parallelism::threads(1));
    s.cipher = ObjectCipher::new(&DataKey::generate(), [3; 16]);
    assert!(matches!(load(&s), Err(Error::Decrypt { segment: 0 })));
}

fn range_read(s: &Stored, r: std::ops::Range<u64>) -> Vec<u8> {
    read_object_range(&s.cipher, &s.layout, s.size, &s.ids, r, |i| {
        Box::<[Option<Bytes>]>::from(s.shards[i as usize].clone())
    })
    .expect("range")
}

#[test]
fn range_reads_at_block_and_segment_boundaries() {
    let l = small(4, 6);
    let seg = u64::from(l.segment_size);
    let blk = u64::from(l.block_size);
    let size = 3 * seg + 17;
    let plain = data(size as usize, 8);
    let s = store(&plain, l, Parallelism::threads(2));
    let points = [0, 1, blk - 1, blk, blk + 1, seg - 1, seg, seg + 1, 2 * seg + blk, 3 * seg, size - 1, size];
    for &a in &points {
        for &b in &points {
            if a <= b {
                assert_eq!(range_read(&s, a..b), &plain[a as usize..b as usize], "{a}..{b}");
            }
        }
    }
    assert!(matches!(
        read_object_range(&s.cipher, &s.layout, s.size, &s.ids, 0..size + 1, |i| Box::<[Option<Bytes>]>::from(
            s.shards[i as usize].clone()
        )),
        Err(Error::BadRange { .. })
    ));
}

/// Counts which shards a range read touches.
struct Counting<'a> {
    shards: &'a [Option<Bytes>],
    touched: std::cell::RefCell<Vec<(u16, std::ops::Range<u32>)>>,
}

impl cairn_client::ShardSource for Counting<'_> {
    fn read(&self, index: u16, range: std::ops::Range<u32>) -> Option<Bytes> {
        self.touched.borrow_mut().push((index, range.clone()));
        self.shards.read(index, range)
    }
}

#[test]
fn healthy_range_read_touches_only_the_data_shards_holding_it() {
    let l = Layout::default();
    let size = u64::from(l.segment_size);
    let plain = data(size as usize, 10);
    let s = store(&plain, l, Parallelism::default());
    let seg = l.segment(l.segment_size);
    let pos = SegmentPos { index: 0, last: true };
    // One byte in the middle of block 100: one block of ciphertext, one shard.
    let src = Counting { shards: &s.shards[0], touched: Default::default() };
    let at = 100 * l.block_size + 5;
    let got = cairn_client::read_segment_range(&s.cipher, seg, pos, &s.ids[0], at..at + 1, &src).expect("read");
    assert_eq!(got, &plain[at as usize..at as usize + 1]);
    let touched = src.touched.borrow();
    assert_eq!(touched.len(), 1, "{touched:?}");
    let (shard, r) = &touched[0];
    assert_eq!(u32::from(*shard), (100 * seg.cipher_block_size()) / seg.shard_len());
    assert_eq!(r.len(), seg.cipher_block_size() as usize);
}

#[test]
fn range_read_with_missing_and_corrupt_data_shards() {
    let l = small(4, 6);
    let plain = data(2 * l.segment_size as usize + 5000, 11);
    let mut s = store(&plain, l, Parallelism::threads(2));
    for seg in &mut s.shards {
        seg[1] = None; // a missing data shard: columns are rebuilt
        let mut b = seg[0].clone().expect("present").to_vec();
        b[10] ^= 0xff; // a corrupt data shard: falls back to verified shards
        seg[0] = Some(Bytes::from(b));
    }
    for r in [0..10u64, 5000..30000, 16383..16385, 30000..s.size] {
        assert_eq!(range_read(&s, r.clone()), &plain[r.start as usize..r.end as usize], "{r:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn wide_codes_decode_from_any_k(size in 1usize..40_000, k in 2u16..12, extra in 1u16..10, seed: u64, drop_seed: u64) {
        let n = k + extra;
        let l = Layout { segment_size: 32 * 1024, block_size: 4 * 1024, k, n };
        let plain = data(size, seed);
        let mut s = store(&plain, l, Parallelism::threads(2));
        // Drop `extra` shards chosen by drop_seed in every segment.
        let mut order: Vec<usize> = (0..usize::from(n)).collect();
        let mut x = drop_seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for seg in &mut s.shards {
            for &i in &order[..usize::from(extra)] {
                seg[i] = None;
            }
        }
        prop_assert_eq!(load(&s).expect("decode"), plain.clone());
        let a = (seed as usize) % size;
        let b = a + (drop_seed as usize) % (size - a + 1);
        prop_assert_eq!(range_read(&s, a as u64..b as u64), &plain[a..b]);
    }
}

/// An endless-looking reader that counts what it has handed out.
struct CountingReader {
    left: u64,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::io::Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        buf[..n].fill(0x5a);
        self.left -= n as u64;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn memory_stays_bounded_whatever_the_object_size() {
    use std::sync::atomic::Ordering;
    let l = small(4, 6);
    let seg = u64::from(l.segment_size);
    let par = Parallelism { threads: 2, in_flight: 3 };
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let size = 400 * seg + 5;
    let reader = CountingReader { left: size, read: read.clone() };
    let cipher = ObjectCipher::new(&DataKey::generate(), [0; 16]);
    let mut delivered = 0u64;
    let mut worst = 0u64;
    encode_object(reader, &cipher, l, par, |s| {
        // Slow sink: the reader must wait for it rather than run ahead.
        std::thread::sleep(std::time::Duration::from_micros(200));
        let ahead = read.load(Ordering::SeqCst) - delivered;
        worst = worst.max(ahead);
        delivered += u64::from(s.layout.plain_len);
        Ok(())
    })
    .expect("encode");
    assert_eq!(delivered, size);
    // In flight: `in_flight` segments, one read ahead to spot the end, and
    // the reader's 64 KiB buffer.
    let bound = (par.in_flight as u64 + 1) * seg + 64 * 1024;
    assert!(worst <= bound, "reader ran {worst} bytes ahead of the sink, bound {bound}");
    assert!(worst >= seg, "the pipeline should have run ahead at least one segment");
}
