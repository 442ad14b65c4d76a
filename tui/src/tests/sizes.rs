//! The dashboard at the three sizes it is drawn for, and the parts that grow or give
//! way with the terminal: the map, the event log, the legend, the run lines.

use super::*;

const SIZES: [(u16, u16); 3] = [(80, 24), (120, 40), (200, 60)];

#[test]
fn partitions_written_since_a_compare_show_unconfirmed_at_every_size() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    for cell in model.cells.iter_mut().take(100) {
        cell.state = PartitionState::Unconfirmed;
        cell.confirmed_age_ms = None;
    }
    let mut app = App::new(model);
    for (w, h) in SIZES {
        let lines = screen(&app, w, h);
        let map = map_cells(&lines);
        let all = text(&lines);
        assert_eq!(map.matches('?').count(), 100, "{w}×{h}\n{all}");
        assert_eq!(map.matches('·').count(), 156, "{w}×{h}\n{all}");
        assert!(all.contains("? unconf"), "legend at {w}×{h}\n{all}");
    }
    // Details of an unconfirmed cell, then of a confirmed one.
    app.panel = Panel::Partitions;
    app.handle_key(key(KeyCode::Enter));
    let all = text(&screen(&app, 80, 24));
    assert!(all.contains("never confirmed in sync"), "{all}");
    app.overlay = None;
    app.partition = 150;
    app.handle_key(key(KeyCode::Enter));
    let all = text(&screen(&app, 80, 24));
    assert!(all.contains("confirmed in sync 12s ago"), "{all}");
}

#[test]
fn a_repair_on_another_node_has_a_gauge_at_every_size() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.repairs = vec![repair_on("n3", 63, 512)];
    let app = App::new(model);
    for (w, h) in SIZES {
        let all = text(&screen(&app, w, h));
        assert!(all.contains("n3 → n1,n2"), "{w}×{h}\n{all}");
        assert!(
            all.contains("63/512") && all.contains("ETA 9s"),
            "{w}×{h}\n{all}"
        );
    }
    // Two at once: both, where there is room.
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.repairs = vec![repair_on("n2", 1, 10), repair_on("n3", 63, 512)];
    let all = text(&screen(&App::new(model), 200, 60));
    assert!(all.contains("n2 → ") && all.contains("n3 → "), "{all}");
}

#[test]
fn a_dead_members_clock_reads_as_what_it_said_last() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.members[2].state = MemberState::Dead;
    model.members[2].stale_age_ms = Some(40_000);
    let mut app = App::new(model);
    for (w, h) in SIZES {
        let all = text(&screen(&app, w, h));
        let row = all
            .lines()
            .find(|l| l.contains("n3") && l.contains("dead"))
            .unwrap();
        assert!(row.contains("40s ago"), "{w}×{h}\n{all}");
        assert!(row.contains("~-3ms"), "{w}×{h}\n{all}");
    }
    let all = text(&screen(&app, 120, 40));
    // Live members' values are not marked.
    let live = all
        .lines()
        .find(|l| l.contains("n2") && l.contains("alive"))
        .unwrap();
    assert!(!live.contains("ago"), "{all}");
    app.member = 2;
    app.handle_key(key(KeyCode::Enter));
    let all = text(&screen(&app, 80, 24));
    assert!(all.contains("12:34:56.789+0 (as said 40s ago)"), "{all}");
}

#[test]
fn the_map_grows_with_the_terminal_and_events_keep_rows() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.cells = (0..512)
        .map(|_| PartitionCell {
            state: PartitionState::InSync,
            replicas: vec!["n1".into()],
            confirmed_age_ms: Some(1_000),
        })
        .collect();
    let app = App::new(model);
    let lines = screen(&app, 200, 60);
    assert_eq!(
        map_cells(&lines).matches('·').count(),
        512,
        "{}",
        text(&lines)
    );
    for (w, h) in SIZES {
        let lines = screen(&app, w, h);
        let all = text(&lines);
        assert!(all.contains("n3 joined"), "events at {w}×{h}\n{all}");
    }
}

#[test]
fn an_event_can_be_picked_and_read_in_full() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    let long = format!(
        "{} and this is how it ends",
        "a long event text ".repeat(16)
    );
    model.events.push(EventRow {
        at: "12:34:55".into(),
        text: long.clone(),
        severity: Severity::Warning,
    });
    model.events.push(EventRow {
        at: "12:34:56".into(),
        text: "the newest".into(),
        severity: Severity::Info,
    });
    let mut app = App::new(model);
    app.panel = Panel::Events;
    // The newest is selected first; up picks the long one.
    app.handle_key(key(KeyCode::Up));
    assert_eq!(app.selected_event(), Some(1));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.overlay, Some(Overlay::Event(1)));
    for (w, h) in SIZES {
        let all = text(&screen(&app, w, h));
        assert!(all.contains("this is how it ends"), "{w}×{h}\n{all}");
    }
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.overlay, None);
    // Down to the newest follows new events again.
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.event, None);
}

#[test]
fn a_notice_has_a_line_of_its_own() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    let notice = "demo cluster of 3 nodes; from another terminal: vergent status --node 127.0.0.1:7001 --certs x";
    model.notice = Some(notice.into());
    let all = text(&screen(&App::new(model), 100, 30));
    assert!(all.contains(notice), "{all}");
}

fn cells(n: usize) -> Vec<PartitionCell> {
    (0..n)
        .map(|_| PartitionCell {
            state: PartitionState::InSync,
            replicas: vec!["n1".into()],
            confirmed_age_ms: Some(1_000),
        })
        .collect()
}

fn event(at: &str, text: &str) -> EventRow {
    EventRow {
        at: at.into(),
        text: text.into(),
        severity: Severity::Info,
    }
}

/// The lines inside the Events block.
fn event_lines(lines: &[String]) -> Vec<String> {
    let start = lines
        .iter()
        .position(|l| l.contains("Events ("))
        .expect("an event log");
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('└'))
        .cloned()
        .collect()
}

#[test]
fn the_legend_has_every_state_in_the_longest_words_that_fit() {
    let app = App::new(healthy(&["n1", "n2", "n3"]));
    let all = text(&screen(&app, 80, 24));
    assert!(
        all.contains("· sync  ? unconfirmed  ~ repair  ! diverged  u down"),
        "{all}"
    );
    for (w, h) in [(120, 40), (200, 60)] {
        let all = text(&screen(&app, w, h));
        assert!(
            all.contains("· in sync  ? unconfirmed  ~ repairing  ! diverged  u down"),
            "{w}×{h}\n{all}"
        );
    }
    // Below the designed size the words go, the symbols stay.
    let all = text(&screen(&app, 50, 20));
    assert!(all.contains("· ? ~ ! u"), "{all}");
}

#[test]
fn a_crowded_80_by_24_keeps_three_event_lines() {
    let mut model = healthy(&["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"]);
    model.cells = cells(512);
    model.repairs = vec![repair_on("n2", 1, 10), repair_on("n3", 63, 512)];
    model.notice = Some("x".repeat(120));
    for i in 0..10 {
        model.events.push(event("12:35:00", &format!("event {i}")));
    }
    let lines = screen(&App::new(model), 80, 24);
    let all = text(&lines);
    assert_eq!(event_lines(&lines).len(), 3, "{all}");
    assert!(all.contains("event 9"), "the newest\n{all}");
    // One repair line, and the one that did not fit is counted.
    assert!(all.contains("repair n2 → n1,n2  1/10"), "{all}");
    assert!(all.contains("+1 more"), "{all}");
}

#[test]
fn repair_rows_say_who_how_far_how_fast_and_when() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.repairs = vec![RepairRow {
        node: "n3".into(),
        peers: vec!["n1".into(), "n2".into()],
        done: 63,
        total: 512,
        keys_moved: 9_000,
        bytes_moved: 3_400_000,
        keys_per_s: Some(1_234.0),
        eta_s: Some(23.0),
    }];
    let app = App::new(model);
    for (w, h, words) in [
        (
            80,
            24,
            "repair n3 → n1,n2  63/512  1.2k keys/s  3.4 MB moved  ETA 23s",
        ),
        (
            120,
            40,
            "repair n3 → n1,n2  63/512  1.2k keys/s  3.4 MB moved  ETA 23s",
        ),
        (
            200,
            60,
            "repair n3 → n1,n2  63/512  1.2k keys/s  3.4 MB moved  ETA 23s",
        ),
    ] {
        let lines = screen(&app, w, h);
        let row = lines
            .iter()
            .find(|l| l.contains(words))
            .unwrap_or_else(|| panic!("{w}×{h}\n{}", text(&lines)));
        // The bar reads without colour, and says how far in numbers too.
        assert!(row.contains('█') && row.contains('░') && row.trim_end().ends_with("12%"));
    }
    // Not yet paced: no rate, and the ETA says it does not know.
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.repairs = vec![RepairRow {
        keys_per_s: None,
        eta_s: None,
        bytes_moved: 0,
        ..repair_on("n2", 0, 8)
    }];
    let all = text(&screen(&App::new(model), 80, 24));
    assert!(all.contains("repair n2 → n1,n2  0/8  ETA …"), "{all}");
}

#[test]
fn a_dead_members_clock_keeps_as_much_as_its_column_holds() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.members[2].state = MemberState::Left;
    model.members[2].stale_age_ms = Some(40_000);
    let app = App::new(model);
    for (w, h, hlc) in [
        (80, 24, "12:34:56 40s ago"),
        (120, 40, "12:34:56 (40s ago)"),
        (200, 60, "12:34:56.789 (40s ago)"),
    ] {
        let all = text(&screen(&app, w, h));
        let row = all
            .lines()
            .find(|l| l.contains("n3") && l.contains("○ left"))
            .unwrap();
        assert!(row.contains(hlc), "{w}×{h}\n{all}");
    }
    // At 120 columns every column of the wide table fits.
    let all = text(&screen(&app, 120, 40));
    for header in ["ADDRESS", "HELD", "LAST AE", "DIFF", "127.0.0.1:7001"] {
        assert!(all.contains(header), "{header}\n{all}");
    }
}

#[test]
fn the_map_scrolls_to_the_selected_partition() {
    let mut model = healthy(&["n1", "n2", "n3", "n4", "n5", "n6"]);
    model.cells = cells(512);
    model.cells[511].state = PartitionState::Diverged;
    let mut app = App::new(model);
    let lines = screen(&app, 80, 24);
    assert!(!map_cells(&lines).contains('!'), "{}", text(&lines));
    app.panel = Panel::Partitions;
    app.partition = 511;
    let lines = screen(&app, 80, 24);
    let all = text(&lines);
    assert!(map_cells(&lines).contains('!'), "{all}");
    assert!(all.contains("–10 of 10"), "the last rows\n{all}");
}

#[test]
fn a_notice_wider_than_the_terminal_wraps_rather_than_cut() {
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.notice = Some(
        "demo cluster of 3 nodes; from another terminal: vergent status --node 127.0.0.1:7001 --certs x"
            .into(),
    );
    let all = text(&screen(&App::new(model), 80, 24));
    assert!(
        all.contains(" demo cluster of 3 nodes; from another terminal: vergent status --node"),
        "{all}"
    );
    assert!(all.contains(" 127.0.0.1:7001 --certs x"), "{all}");
}

#[test]
fn a_picked_event_stays_picked_as_old_events_drop_off() {
    let log = |from: usize| -> Vec<EventRow> {
        (from..from + 20)
            .map(|i| event("12:35:00", &format!("event {i}")))
            .collect()
    };
    let mut model = healthy(&["n1", "n2", "n3"]);
    model.events = log(0);
    let mut app = App::new(model.clone());
    app.panel = Panel::Events;
    for _ in 0..3 {
        app.handle_key(key(KeyCode::Up));
    }
    assert_eq!(
        app.model.events[app.selected_event().unwrap()].text,
        "event 16"
    );
    app.handle_key(key(KeyCode::Enter));
    // The feeder's log is bounded: two new events push two old ones out.
    model.events = log(2);
    app.update(model.clone());
    assert_eq!(
        app.model.events[app.selected_event().unwrap()].text,
        "event 16"
    );
    assert_eq!(app.overlay, Some(Overlay::Event(14)));
    let lines = screen(&app, 80, 24);
    assert!(text(&lines).contains("event 16"), "{}", text(&lines));
    app.handle_key(key(KeyCode::Esc));
    assert!(text(&screen(&app, 80, 24)).contains("5 newer below"));
    // End follows the newest again, and keeps following.
    app.handle_key(key(KeyCode::End));
    model.events = log(4);
    app.update(model.clone());
    assert_eq!(
        app.model.events[app.selected_event().unwrap()].text,
        "event 23"
    );
    // Home picks the oldest; a page down moves by the lines the log shows.
    app.handle_key(key(KeyCode::Home));
    assert_eq!(app.selected_event(), Some(0));
    let shown = event_lines(&draw(&mut app, 80, 24)).len();
    app.handle_key(key(KeyCode::PageDown));
    assert_eq!(app.selected_event(), Some(shown));
}

#[test]
fn up_and_down_move_by_a_row_of_the_map_as_drawn() {
    let mut app = App::new(healthy(&["n1", "n2", "n3"]));
    app.panel = Panel::Partitions;
    for (w, h) in [(80, 24), (120, 40)] {
        draw(&mut app, w, h);
        app.partition = 0;
        app.handle_key(key(KeyCode::Down));
        // The map is the width beside the side panel, inside its borders.
        assert_eq!(app.partition, w as usize - 28, "{w}×{h}");
        app.handle_key(key(KeyCode::Up));
        assert_eq!(app.partition, 0, "{w}×{h}");
    }
    // A terminal too small for the panels keeps the sizes last drawn.
    draw(&mut app, 30, 8);
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.partition, 92);
}
