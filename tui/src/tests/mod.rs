//! Screens rendered from fixture models into a test backend, read back as text.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

use crate::app::{App, Command, Overlay, Panel};
use crate::model::*;
use crate::ui;

fn member(name: &str, state: MemberState) -> MemberRow {
    MemberRow {
        filling: 0,
        unreachable: false,
        name: name.to_string(),
        address: "127.0.0.1:7001".into(),
        state,
        incarnation: 2,
        hlc: Some("12:34:56.789+0".into()),
        skew_ms: Some(-3),
        writes_per_s: Some(1234.0),
        hints: 0,
        hints_oldest_age_ms: 0,
        hints_clear_s: None,
        partitions_held: 256,
        last_exchange_age_ms: Some(4_000),
        partitions_differing: Some(0),
        sync_lag_ms: Some(4_000),
        stale_age_ms: None,
    }
}

fn healthy(names: &[&str]) -> Dashboard {
    Dashboard {
        cluster_id: "8a3f5ed874e4707842fa15bb9d7e9dc5".into(),
        partitions: 256,
        replication_factor: 3,
        watched: names[0].to_string(),
        time: "12:34:56".into(),
        connection: Connection::Live,
        write_rate: 1234.0,
        read_rate: 56.0,
        members: names
            .iter()
            .map(|n| member(n, MemberState::Alive))
            .collect(),
        cells: (0..256)
            .map(|_| PartitionCell {
                state: PartitionState::InSync,
                replicas: names.iter().take(3).map(|n| n.to_string()).collect(),
                confirmed_age_ms: Some(12_000),
            })
            .collect(),
        throughput: (0..60).map(|i| 1000 + (i * 37) % 400).collect(),
        repairs: Vec::new(),
        notice: None,
        events: vec![EventRow {
            at: "12:34:50".into(),
            text: format!("{} joined", names[names.len() - 1]),
            severity: Severity::Info,
        }],
        detail: None,
        buckets: Vec::new(),
        linearizable: None,
    }
}

fn repair_on(node: &str, done: u64, total: u64) -> RepairRow {
    RepairRow {
        node: node.to_string(),
        peers: vec!["n1".into(), "n2".into()],
        done,
        total,
        keys_moved: 40,
        bytes_moved: 4_000,
        keys_per_s: Some(40.0),
        eta_s: Some(9.0),
    }
}

fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect()
}

/// Draws `app` as the terminal loop does: the sizes keys move by are stored in the app,
/// then the screen is rendered.
fn draw(app: &mut App, width: u16, height: u16) -> Vec<String> {
    if let Some(viewport) = ui::viewport(app, Rect::new(0, 0, width, height)) {
        app.viewport = viewport;
    }
    screen(app, width, height)
}

fn text(lines: &[String]) -> String {
    lines.join("\n")
}

/// The cells of the partition map: the rows inside its block, left of the side panel.
fn map_cells(lines: &[String]) -> String {
    let start = lines
        .iter()
        .position(|l| l.contains("Partitions ("))
        .expect("a partition map");
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('└'))
        .map(|l| {
            l.split("││")
                .next()
                .unwrap_or("")
                .trim_start_matches('│')
                .to_string()
        })
        .collect()
}

#[test]
fn three_healthy_nodes_fit_80_by_24() {
    let app = App::new(healthy(&["n1", "n2", "n3"]));
    let lines = screen(&app, 80, 24);
    let all = text(&lines);
    assert!(all.contains("Vergent"), "{all}");
    assert!(
        all.contains("256 partitions · RF 3 · watching n1 · 12:34:56 UTC"),
        "{all}"
    );
    assert!(
        all.contains("nodes 3 alive · 0 suspect · 0 dead · 0 left │ writes 1.2k/s  reads 56/s"),
        "{all}"
    );
    for name in ["n1", "n2", "n3"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(name) && l.contains("● alive")),
            "{name}\n{all}"
        );
    }
    assert!(all.contains("12:34:56.789+0"), "the HLC is shown\n{all}");
    assert_eq!(
        map_cells(&lines).matches('·').count(),
        256,
        "every partition drawn"
    );
    assert!(all.contains("n3 joined"), "{all}");
    assert!(lines.last().unwrap().contains("q quit"), "{all}");
}

#[test]
fn a_large_terminal_shows_more_columns() {
    let app = App::new(healthy(&["n1", "n2", "n3"]));
    let lines = screen(&app, 200, 60);
    let all = text(&lines);
    for header in [
        "ADDRESS",
        "HELD",
        "LAST AE",
        "DIFF",
        "SYNC LAG",
        "HLC (UTC)",
    ] {
        assert!(all.contains(header), "{header}\n{all}");
    }
    assert!(all.contains("127.0.0.1:7001"), "{all}");
}

#[test]
fn dead_and_suspect_nodes_stand_out_and_read_without_colour() {
    let mut model = healthy(&["n1", "n2", "n3", "n4", "n5"]);
    model.members[1].state = MemberState::Dead;
    model.members[2].state = MemberState::Suspect;
    model.members[0].hints = 1200;
    model.members[0].hints_oldest_age_ms = 95_000;
    model.members[0].hints_clear_s = Some(12.0);
    let mut app = App::new(model);
    app.colour = false;
    let lines = screen(&app, 80, 24);
    let all = text(&lines);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("n2") && l.contains("✕ dead")),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("n3") && l.contains("◐ suspect")),
        "{all}"
    );
    assert!(all.contains("nodes 3 alive · 1 suspect · 1 dead"), "{all}");
    assert!(
        all.contains("1200 1m35s→12s"),
        "hint count, oldest age, time to clear\n{all}"
    );
}

#[test]
fn a_joining_member_and_one_the_watched_node_cannot_reach_say_so() {
    let mut model = healthy(&["n1", "n2", "n3", "n4"]);
    model.members[2].filling = 40;
    model.members[3].unreachable = true;
    let mut app = App::new(model);
    app.colour = false;
    let lines = screen(&app, 80, 24);
    let all = text(&lines);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("n3") && l.contains("● joining")),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("n4") && l.contains("● unreach")),
        "{all}"
    );
}

#[test]
fn diverged_repairing_and_under_replicated_partitions_have_their_own_symbols() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.cells[3].state = PartitionState::Diverged;
    model.cells[4].state = PartitionState::Diverged;
    model.cells[17].state = PartitionState::Repairing;
    model.cells[200].state = PartitionState::UnderReplicated;
    model.repairs = vec![repair_on("n3", 128, 512)];
    let app = App::new(model);
    let lines = screen(&app, 80, 24);
    let all = text(&lines);
    assert!(
        all.contains("· sync  ? unconfirmed  ~ repair  ! diverged  u down"),
        "legend\n{all}"
    );
    let map = map_cells(&lines);
    assert_eq!(map.matches('!').count(), 2, "{all}");
    assert_eq!(
        (map.matches('~').count(), map.matches('u').count()),
        (1, 1),
        "{all}"
    );
    assert_eq!(map.matches('·').count(), 252, "{all}");
    assert!(
        all.contains("repair n3 → n1,n2  128/512  40 keys/s  4.0 kB moved  ETA 9s"),
        "the repair gauge\n{all}"
    );
}

#[test]
fn an_empty_cluster_renders() {
    let app = App::new(Dashboard::empty("n1"));
    for (w, h) in [(80, 24), (200, 60)] {
        let all = text(&screen(&app, w, h));
        assert!(all.contains("connecting…"), "{all}");
        assert!(all.contains("no partitions yet"), "{all}");
        assert!(all.contains("nothing has happened yet"), "{all}");
    }
}

#[test]
fn long_names_are_cut_cleanly() {
    let long = "a-very-long-node-name-that-does-not-fit-anywhere.example.internal";
    let mut model = healthy(&[long, "n2", "n3"]);
    model.events.push(EventRow {
        at: "12:34:59".into(),
        text: format!(
            "{long} declared dead after missing probes from every other member of the cluster"
        ),
        severity: Severity::Alert,
    });
    let app = App::new(model);
    for (w, h, in_table) in [(80, 24, "a-very-l…"), (200, 60, "a-very-long-nod…")] {
        let lines = screen(&app, w, h);
        let all = text(&lines);
        assert!(
            lines
                .iter()
                .any(|l| l.contains(in_table) && l.contains("● alive")),
            "{all}"
        );
        assert!(all.contains("watching a-very-long-nod… ·"), "{all}");
        assert!(lines.iter().all(|l| l.chars().count() == w as usize));
    }
    let lines = screen(&app, 80, 24);
    let event = lines
        .iter()
        .find(|l| l.contains("12:34:59"))
        .expect("the event");
    assert!(
        event.trim_end_matches('│').trim_end().ends_with('…'),
        "{event}"
    );
}

#[test]
fn a_lost_connection_is_said_and_the_last_view_kept() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.connection = Connection::Lost {
        reason: "no answer".into(),
        stale_s: 4,
    };
    let app = App::new(model);
    let all = text(&screen(&app, 80, 24));
    assert!(
        all.contains("n1 UNREACHABLE: no answer; last view 4s old"),
        "{all}"
    );
    assert!(all.contains("● alive"), "the last view stays\n{all}");
}

#[test]
fn a_small_terminal_says_what_it_needs() {
    let app = App::new(healthy(&["n1"]));
    let all = text(&screen(&app, 30, 8));
    assert!(
        all.contains("needs at least") && all.contains("80×24"),
        "{all}"
    );
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn keys_move_the_selection_pause_and_ask_before_repairing() {
    let mut app = App::new(healthy(&["n1", "n2", "n3"]));
    assert_eq!(app.handle_key(key(KeyCode::Down)), None);
    assert_eq!(app.selected_member(), Some("n2"));
    assert_eq!(app.handle_key(key(KeyCode::Char('r'))), None);
    assert_eq!(app.overlay, Some(Overlay::ConfirmRepair("n2".into())));
    let all = text(&screen(&app, 80, 24));
    assert!(all.contains("Start a repair on n2?"), "{all}");
    assert_eq!(
        app.handle_key(key(KeyCode::Char('y'))),
        Some(Command::Repair { node: "n2".into() })
    );
    assert_eq!(app.overlay, None);

    assert_eq!(app.handle_key(key(KeyCode::Char('p'))), None);
    let mut changed = healthy(&["n1", "n2", "n3"]);
    changed.members[2].state = MemberState::Dead;
    app.update(changed);
    assert_eq!(app.model.members[2].state, MemberState::Alive, "paused");
    assert!(text(&screen(&app, 80, 24)).contains("PAUSED"));

    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.panel, Panel::Partitions);
    app.handle_key(key(KeyCode::Right));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        Some(Command::Inspect { partition: 1 })
    );
    assert!(text(&screen(&app, 80, 24)).contains("asking the replicas"));
    let mut with_detail = app.model.clone();
    with_detail.detail = Some(PartitionDetail {
        partition: 1,
        replicas: vec![ReplicaDetail {
            name: "n1".into(),
            state: MemberState::Alive,
            root: Some("3fa2c1d0aa55ee01".into()),
            count: Some(4012),
            last_exchange_age_ms: Some(2_000),
        }],
    });
    app.update(with_detail);
    let all = text(&screen(&app, 80, 24));
    assert!(
        all.contains("3fa2c1d0aa55ee01") && all.contains("4012"),
        "{all}"
    );
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.overlay, None);
    assert_eq!(app.handle_key(key(KeyCode::Char('?'))), None);
    assert!(text(&screen(&app, 80, 24)).contains("pause / resume updates"));
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Some(Command::Quit));
}

#[test]
fn skew_fits_its_column_in_a_unit_that_says_what_it_is() {
    use crate::ui::skew_text;
    let cases = [
        (0, "+0ms"),
        (-3, "-3ms"),
        (999, "+999ms"),
        (1_990, "+1.99s"),
        (-2_999, "-3.00s"),
        (12_345, "+12.3s"),
        (-60_000, "-60.0s"),
        (-600_000, "-10m"),
        (42_120_000, "+11.7h"),
        (i64::MIN, "-2562047788015h"),
    ];
    for (ms, text) in cases {
        assert_eq!(skew_text(ms), text, "{ms}");
    }
    for ms in [
        0,
        999,
        1_000,
        9_994,
        9_995,
        99_949,
        99_999,
        3_599_999,
        359_819_999,
        359_999_999,
    ] {
        assert!(skew_text(ms).len() <= 6, "{ms}: {}", skew_text(ms));
        assert!(skew_text(-ms).len() <= 6, "{ms}: {}", skew_text(-ms));
    }
}

mod sizes;

#[test]
fn b_opens_the_buckets_with_their_conflicts_and_any_key_closes_them() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.buckets = vec![
        BucketRow {
            name: "default".into(),
            kind: "lww".into(),
            ttl: None,
            keys: Some(1_200),
            lost_per_s: Some(3.5),
            lost: 41,
            siblings_max: 0,
            hot: vec![("price:7".into(), 30), ("price:9".into(), 11)],
        },
        BucketRow {
            name: "carts".into(),
            kind: "siblings".into(),
            ttl: Some("1day".into()),
            keys: None,
            lost_per_s: None,
            lost: 0,
            siblings_max: 4,
            hot: vec![("cart:9".into(), 4)],
        },
        BucketRow {
            name: "hits".into(),
            kind: "counter".into(),
            ttl: None,
            keys: Some(3),
            lost_per_s: None,
            lost: 0,
            siblings_max: 0,
            hot: Vec::new(),
        },
        BucketRow {
            name: "locks".into(),
            kind: "linearizable".into(),
            ttl: None,
            keys: Some(2),
            lost_per_s: None,
            lost: 0,
            siblings_max: 0,
            hot: Vec::new(),
        },
    ];
    model.linearizable = Some(
        "linearizable on n1: 850 ops/s, 2.40 round trips per op (35% in one), 1.5 retries/s, 3 in flight"
            .into(),
    );
    let mut app = App::new(model);
    app.handle_key(KeyEvent::from(KeyCode::Char('b')));
    let all = text(&screen(&app, 120, 30));
    for shown in [
        "BUCKET",
        "MOST CONFLICTED",
        "3.5 lost/s (41 in all)",
        "price:7 (30)",
        "up to 4 siblings",
        "cart:9 (4)",
        "1day",
        "merged",
        "1200",
        "agreed",
        "850 ops/s, 2.40 round trips per op (35% in one), 1.5 retries/s, 3 in flight",
    ] {
        assert!(all.contains(shown), "{shown}\n{all}");
    }
    app.handle_key(KeyEvent::from(KeyCode::Char('x')));
    assert_eq!(app.overlay, None);
}
