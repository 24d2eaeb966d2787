//! The store on its own: commits, versions, replaced runs, the lock, compaction and reading a
//! metric back, without Python.
use std::time::Duration;

use super::*;
use crate::model::{status, Curve, RunConfig, RunRecord};

fn series(metric: &str, steps: std::ops::Range<i64>, scale: f64) -> Series {
    let steps: Vec<i64> = steps.collect();
    Series {
        metric: metric.to_string(),
        values: steps.iter().map(|&s| scale / s as f64).collect(),
        tokens: steps.iter().map(|&s| s * 1000).collect(),
        lr: vec![],
        steps,
    }
}

fn record(run_id: RunId, segment: Option<String>) -> RunRecord {
    RunRecord {
        run_id,
        name: format!("run{run_id}"),
        source: format!("/runs/{run_id}"),
        format: "csv".into(),
        fingerprint: "f".into(),
        config: RunConfig::default(),
        n_points: 0,
        final_step: None,
        final_loss: None,
        smooth_loss: None,
        status: status::COMPLETE.into(),
        ingested_at_us: 0,
        n_malformed: 0,
        segment,
        files: vec![],
    }
}

/// Commit `runs` (id, loss scale, steps) in one transaction over what the store holds.
fn commit(store: &Store, runs: &[(RunId, f64, std::ops::Range<i64>)]) -> Manifest {
    let mut tx = store.begin(Duration::ZERO).unwrap();
    let mut writer = tx.segment_writer(0).unwrap();
    let mut records: Vec<RunRecord> = tx
        .base
        .runs
        .iter()
        .filter(|r| !runs.iter().any(|(id, _, _)| *id == r.run_id))
        .cloned()
        .collect();
    for (id, scale, steps) in runs {
        let file = writer
            .add_run(
                *id,
                &[
                    series("loss", steps.clone(), *scale),
                    series("val_loss", steps.clone(), 1.0),
                ],
            )
            .unwrap();
        records.push(record(*id, Some(file)));
    }
    tx.add_segments(writer.finish().unwrap());
    tx.commit(records).unwrap()
}

fn losses(store: &Store) -> Vec<(RunId, Vec<i64>, Vec<f64>)> {
    let m = store.latest().unwrap();
    let copy = |_: RunId, s: Curve| (s.steps.to_vec(), s.values.to_vec(), s.tokens.len());
    let mut out: Vec<_> = visit_metric(store.root(), &m, "loss", true, &copy)
        .unwrap()
        .into_iter()
        .map(|(id, (steps, values, n_tokens))| {
            assert_eq!(n_tokens, steps.len(), "tokens come with the steps");
            (id, steps, values)
        })
        .collect();
    out.sort_by_key(|r| r.0);
    out
}

#[test]
fn commits_make_versions_and_a_replaced_run_reads_its_new_points() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    assert_eq!(store.latest().unwrap().version, 0);
    commit(&store, &[(1, 1.0, 1..11), (2, 2.0, 1..6)]);
    let m = commit(&store, &[(2, 3.0, 1..21)]); // run 2 grew
    assert_eq!(m.version, 2);
    let got = losses(&store);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, (1..11).collect::<Vec<_>>());
    assert_eq!(got[1].1.len(), 20);
    assert!((got[1].2[0] - 3.0).abs() < 1e-15); // the new points, not the replaced ones
}

#[test]
fn a_dropped_transaction_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    commit(&store, &[(1, 1.0, 1..4)]);
    {
        let tx = store.begin(Duration::ZERO).unwrap();
        let mut writer = tx.segment_writer(0).unwrap();
        writer.add_run(9, &[series("loss", 1..100, 1.0)]).unwrap();
        writer.finish().unwrap(); // segments written, no manifest: a crash before the commit
    }
    assert_eq!(store.latest().unwrap().version, 1);
    assert_eq!(losses(&store).len(), 1);
}

#[test]
fn a_second_writer_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    let _held = store.begin(Duration::ZERO).unwrap();
    match store.begin(Duration::from_millis(100)) {
        Err(Error::Locked { holder, .. }) => assert!(holder.contains(&std::process::id().to_string()), "{holder}"),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn compaction_keeps_every_live_point_and_removes_dead_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    commit(&store, &[(1, 1.0, 1..50), (2, 2.0, 1..50)]);
    commit(&store, &[(2, 5.0, 1..70)]);
    let before = losses(&store);
    let report = store.compact(Duration::ZERO).unwrap();
    assert!(report.files_removed > 0);
    assert_eq!(losses(&store), before);
    let on_disk = std::fs::read_dir(dir.path().join("points")).unwrap().count();
    assert_eq!(on_disk, store.latest().unwrap().segments.len());
}

#[test]
fn opening_a_missing_store_without_create_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::open(dir.path().join("nope"), false),
        Err(Error::Store { .. })
    ));
}

#[test]
fn a_series_longer_than_a_row_group_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    let n = (points::ROW_GROUP_ROWS + points::ROW_GROUP_ROWS / 2) as i64;
    commit(&store, &[(1, 1.0, 1..101), (2, 2.0, 1..n + 1), (3, 3.0, 1..11)]);
    let got = losses(&store);
    assert_eq!(
        got.iter().map(|r| (r.0, r.1.len())).collect::<Vec<_>>(),
        vec![(1, 100), (2, n as usize), (3, 10)]
    );
    assert!(got[1].1.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn series_across_read_batches_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    // 100,000-point runs cross the reader's 65,536-row batches inside one row group.
    let n = 100_001;
    commit(
        &store,
        &[
            (1, 1.0, 1..50),
            (2, 2.0, 1..n),
            (3, 3.0, 1..n),
            (4, 4.0, 1..n),
            (5, 5.0, 1..7),
        ],
    );
    let got = losses(&store);
    assert_eq!(
        got.iter().map(|r| (r.0, r.1.len())).collect::<Vec<_>>(),
        vec![(1, 49), (2, 100_000), (3, 100_000), (4, 100_000), (5, 6)]
    );
    for (id, steps, values) in &got {
        assert!(steps.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(values
            .iter()
            .zip(steps)
            .all(|(v, &s)| (v - *id as f64 / s as f64).abs() < 1e-12));
    }
}

/// Every column of every row, as written: runs split over fixed-size row groups, with
/// missing lr and tokens, two metrics, and groups of one metric (whose metric column is
/// written once and spliced into the next such group).
#[test]
fn rows_over_fixed_size_row_groups_read_back_column_by_column() {
    use table::Values;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    let tx = store.begin(Duration::ZERO).unwrap();
    let mut writer = tx.segment_writer(0).unwrap();
    // (run_id, metric, step, tokens or -1, value, lr or NaN)
    let mut expected: Vec<(i64, String, i64, i64, f64, f64)> = Vec::new();
    let n = (points::ROW_GROUP_ROWS / 3 + 17) as i64;
    for id in 0..9 {
        let mut loss = series("loss", 0..n + id, 1.0 + id as f64);
        loss.lr = loss
            .steps
            .iter()
            .map(|&s| if s % 5 == 0 { f64::NAN } else { s as f64 * 1e-6 })
            .collect();
        if id == 3 {
            loss.tokens.clear();
        }
        // val_loss on one run: the first row group holds two metrics, the others one
        let runs = if id == 1 {
            vec![loss, series("val_loss", 1..id * 10, 2.0)]
        } else {
            vec![loss]
        };
        for s in &runs {
            for i in 0..s.len() {
                let tokens = s.tokens.get(i).copied().unwrap_or(-1);
                let lr = s.lr.get(i).copied().unwrap_or(f64::NAN);
                expected.push((id, s.metric.clone(), s.steps[i], tokens, s.values[i], lr));
            }
        }
        writer.add_run(id, &runs).unwrap();
    }
    let segments = writer.finish().unwrap();
    assert_eq!(segments.len(), 1);
    let path = store.root().join(&segments[0].file);
    let groups = table::row_groups(&path).unwrap();
    assert_eq!(groups, expected.len().div_ceil(points::ROW_GROUP_ROWS));
    // Two full groups of one metric: the second spliced from the first one's encoding; the
    // statistics say which metric each group holds.
    let bounds: Vec<_> = (0..groups)
        .map(|g| table::column_bounds(&path, g, "metric").unwrap().unwrap())
        .collect();
    assert_eq!(bounds[0], (b"loss".to_vec(), b"val_loss".to_vec()));
    assert!(
        groups >= 3 && bounds[1..].iter().all(|b| *b == (b"loss".to_vec(), b"loss".to_vec())),
        "{bounds:?}"
    );
    let cols = table::read_columns(&path, &["run_id", "metric", "step", "tokens", "value", "lr"]).unwrap();
    let ints = |c: &table::Column, missing: i64| -> Vec<i64> {
        let Values::Int64(v) = &c.values else { panic!() };
        let mut it = v.iter();
        match &c.valid {
            None => v.clone(),
            Some(valid) => valid
                .iter()
                .map(|&ok| if ok { *it.next().unwrap() } else { missing })
                .collect(),
        }
    };
    let floats = |c: &table::Column| -> Vec<u64> {
        let Values::Float64(v) = &c.values else { panic!() };
        let mut it = v.iter();
        match &c.valid {
            None => v.iter().map(|x| x.to_bits()).collect(),
            Some(valid) => valid
                .iter()
                .map(|&ok| {
                    if ok {
                        it.next().unwrap().to_bits()
                    } else {
                        f64::NAN.to_bits()
                    }
                })
                .collect(),
        }
    };
    let Values::Utf8(metric) = &cols[1].values else {
        panic!()
    };
    let metric: Vec<String> = metric
        .iter()
        .map(|m| String::from_utf8(m.data().to_vec()).unwrap())
        .collect();
    assert_eq!(ints(&cols[0], 0), expected.iter().map(|r| r.0).collect::<Vec<_>>());
    assert_eq!(metric, expected.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
    assert_eq!(ints(&cols[2], 0), expected.iter().map(|r| r.2).collect::<Vec<_>>());
    assert_eq!(ints(&cols[3], -1), expected.iter().map(|r| r.3).collect::<Vec<_>>());
    assert_eq!(
        floats(&cols[4]),
        expected.iter().map(|r| r.4.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        floats(&cols[5]),
        expected.iter().map(|r| r.5.to_bits()).collect::<Vec<_>>()
    );
}

/// Row groups whose text column is one value repeated as often get that column spliced in
/// from the first one's encoding, and read back as written.
#[test]
fn a_repeated_text_column_is_spliced_and_reads_back() {
    use table::{ColumnData, Data, Values};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let fields = [
        table::field("id", table::Kind::Int64, false),
        table::field("name", table::Kind::Utf8, false),
    ];
    let mut w = table::TableWriter::create(&path, &fields, &[], None).unwrap();
    let name = |s: &str| parquet::data_type::ByteArray::from(s.as_bytes().to_vec());
    let groups: [(&str, usize); 4] = [("loss", 1000), ("loss", 1000), ("val_loss", 1000), ("loss", 1000)];
    let mut expected = Vec::new();
    for (g, (text, n)) in groups.iter().enumerate() {
        let ids: Vec<i64> = (0..*n as i64).map(|i| g as i64 * 10_000 + i).collect();
        let runs = [(name(text), *n)];
        let dense = |values| ColumnData {
            values,
            def_levels: None,
        };
        w.write_row_group_data(&[dense(Data::Int64(&ids)), dense(Data::Utf8Runs(&runs))])
            .unwrap();
        expected.extend(ids.iter().map(|&i| (i, text.to_string())));
    }
    assert_eq!(
        w.spliced(),
        1,
        "the second group's column comes from the first's encoding"
    );
    w.finish().unwrap();
    for (g, (text, _)) in groups.iter().enumerate() {
        let (min, max) = table::column_bounds(&path, g, "name").unwrap().unwrap();
        assert_eq!((min.as_slice(), max.as_slice()), (text.as_bytes(), text.as_bytes()));
    }
    let cols = table::read_columns(&path, &["id", "name"]).unwrap();
    let (Values::Int64(ids), Values::Utf8(names)) = (&cols[0].values, &cols[1].values) else {
        panic!()
    };
    let got: Vec<(i64, String)> = ids
        .iter()
        .zip(names)
        .map(|(&i, n)| (i, String::from_utf8(n.data().to_vec()).unwrap()))
        .collect();
    assert_eq!(got, expected);
}
