#![allow(dead_code)]
use serde_json::Value;

pub const DOCS_REVISION: &str = include_str!("../data/pantavisor-docs-revision.json");
pub const GATEWAY: &str = include_str!("../data/gateway-revision.json");

pub fn gateway() -> Value {
    serde_json::from_str(GATEWAY).unwrap()
}

pub fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The gateway state with every object id replaced by the id of real
/// content put into `store`.
pub fn gateway_with_objects(store: &pvstate::ObjectStore) -> pvstate::State {
    let mut v = gateway();
    for (key, value) in v.as_object_mut().unwrap() {
        if key != "#spec" && value.is_string() {
            let content = format!("content of {key}\n").repeat(100);
            let id = store.put_bytes(content.as_bytes()).unwrap();
            *value = Value::String(id.to_string());
        }
    }
    pvstate::State::parse(&bytes(&v)).unwrap()
}

/// The names of the files in `dir`, sorted.
pub fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
