use super::*;

fn record(id: i64, catalog: &(Arc<Event>, Arc<Reaction>)) -> ScriptRecord {
    ScriptRecord {
        id,
        title: format!("script {id}"),
        enabled: true,
        event: catalog.0.clone(),
        reaction: catalog.1.clone(),
        cameras: (0, 0),
        users: (0, 0),
        extra: Arc::new(Extra::default()),
    }
}

#[test]
fn scripts_are_found_by_id_with_their_cameras_in_any_order() {
    let event = Event {
        id: 1,
        name: "e".into(),
        description: "E".into(),
        color: "#000".into(),
        analytic_type: "t".into(),
    };
    let reaction = Reaction {
        id: 2,
        name: "sound".into(),
        description: "S".into(),
        is_default: true,
        kind: crate::delivery::ReactionKind::Client,
    };
    let catalog = (Arc::new(event), Arc::new(reaction));
    let mut b = ScriptsBuilder::default();
    b.push(record(30, &catalog), Some(&[7, 8]), &[3]);
    b.push(record(10, &catalog), None, &[1, 2]);
    b.push(record(20, &catalog), Some(&[9]), &[]);
    b.push(record(10, &catalog), Some(&[1]), &[5]);
    let scripts = b.finish();
    assert_eq!(scripts.len(), 3);
    assert_eq!(format!("{:?}", scripts.keys()), "[10, 20, 30]");
    assert_eq!(scripts[&20].title, "script 20");
    assert!(scripts.get(&15).is_none() && !scripts.contains_key(&40));
    assert_eq!(scripts.cameras(&30), Some(Some(&[7, 8][..])));
    assert_eq!(scripts.cameras(&20), Some(Some(&[9][..])));
    assert_eq!(scripts.cameras(&10), Some(None), "the first record of a repeated id");
    assert_eq!(scripts.cameras(&11), None);
    assert_eq!(scripts.users(&scripts[&10]), [1, 2]);
    assert_eq!(scripts.users(&scripts[&20]), [0i64; 0]);
    assert_eq!(scripts.users(&scripts[&30]), [3]);
    assert_eq!(scripts.iter().map(|r| r.id).collect::<Vec<_>>(), [10, 20, 30]);
}
