//! The state JSON of one revision: parsing into typed entries, writing back
//! in canonical form, and the questions other crates ask of a state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

use crate::canonical;
use crate::error::{Error, Problem, Problems, Result};
use crate::keys::path_problem;
use crate::model::*;
use crate::object_id::ObjectId;

/// One revision: a flat map from relative paths to typed entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    entries: BTreeMap<String, Entry>,
}

/// The settings a container runs with once group defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub group: String,
    pub status_goal: StatusGoal,
    pub restart_policy: RestartPolicy,
    pub auto_recovery: Option<AutoRecovery>,
}

/// The top-level object as written, duplicates included.
struct RawMembers(Vec<(String, Value)>);

impl<'de> de::Deserialize<'de> for RawMembers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMembers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object mapping state keys to documents or object ids")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawMembers, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    members.push((k, v));
                }
                Ok(RawMembers(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// What kind of document a `.json` key holds.
fn classify(key: &str) -> &'static str {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["bsp", "run.json"] => "bsp-run",
        ["bsp", "src.json"] => "src",
        ["device.json"] => "device",
        ["groups.json"] => "groups",
        ["_sigs", _] => "sig",
        [c, "run.json"] if !c.starts_with('_') => "run",
        [c, "src.json"] if !c.starts_with('_') => "src",
        [c, "services.json"] if !c.starts_with('_') => "services",
        _ => "json",
    }
}

fn typed<T: DeserializeOwned>(key: &str, value: &Value) -> std::result::Result<T, Problem> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            Problem::new(key, inner)
        } else {
            Problem::new(key, format!("{path}: {inner}"))
        }
    })
}

fn check_spec(key: &str, found: &str, expected: &str, problems: &mut Vec<Problem>) {
    if found != expected {
        problems.push(Problem::new(
            key,
            format!("#spec: expected \"{expected}\", found \"{found}\""),
        ));
    }
}

fn parse_entry(key: &str, value: Value, problems: &mut Vec<Problem>) -> Entry {
    if key == "#spec" {
        match value.as_str() {
            Some(SPEC_STATE) => {}
            Some(other) => problems.push(Problem::new(
                key,
                format!("expected \"{SPEC_STATE}\", found \"{other}\""),
            )),
            None => problems.push(Problem::new(
                key,
                format!("expected the string \"{SPEC_STATE}\""),
            )),
        }
        return Entry::Json(value);
    }
    if !key.ends_with(".json") {
        return match value.as_str() {
            Some(s) => match s.parse::<ObjectId>() {
                Ok(id) => Entry::Object(id),
                Err(e) => {
                    problems.push(Problem::new(key, e.to_string()));
                    Entry::Json(value)
                }
            },
            None => {
                problems.push(Problem::new(
                    key,
                    "expected an object id (sha256 hex string); only keys ending in .json hold inline documents",
                ));
                Entry::Json(value)
            }
        };
    }
    let class = classify(key);
    if let Some(s) = value.as_str() {
        // pvr stores a .json file as an object when told to (`pvr add` with
        // force-object); Pantavisor's own documents must be inline.
        if class == "json" && ObjectId::is_valid(s) {
            if let Ok(id) = s.parse() {
                return Entry::Object(id);
            }
        }
    }
    if !value.is_object() && !value.is_array() {
        let what = if class == "json" {
            "a .json key holds an inline JSON document or an object id"
        } else {
            "this document must be inline JSON"
        };
        problems.push(Problem::new(key, what));
        return Entry::Json(value);
    }
    let parsed = match class {
        "bsp-run" => typed::<BspRun>(key, &value).map(Entry::BspRun),
        "run" => typed::<RunManifest>(key, &value).map(|d| {
            check_spec(key, &d.spec, SPEC_RUN, problems);
            Entry::Run(Box::new(d))
        }),
        "src" => typed::<SrcManifest>(key, &value).map(|d| {
            let expected = if key == "bsp/src.json" {
                SPEC_BSP_SRC
            } else {
                SPEC_SRC
            };
            check_spec(key, &d.spec, expected, problems);
            Entry::Src(d)
        }),
        "device" => typed::<DeviceManifest>(key, &value).map(|d| Entry::Device(Box::new(d))),
        "groups" => typed::<Vec<Group>>(key, &value).map(Entry::Groups),
        "services" => typed::<ServicesManifest>(key, &value).map(|d| {
            check_spec(key, &d.spec, SPEC_XCONNECT, problems);
            Entry::Services(d)
        }),
        "sig" => typed::<SignatureDoc>(key, &value).map(|d| {
            check_spec(key, &d.spec, SPEC_SIG, problems);
            Entry::Signature(d)
        }),
        _ => Ok(Entry::Json(value.clone())),
    };
    parsed.unwrap_or_else(|p| {
        problems.push(p);
        Entry::Json(value)
    })
}

impl State {
    /// An empty state with only `#spec`.
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(
            "#spec".to_string(),
            Entry::Json(Value::String(SPEC_STATE.into())),
        );
        State { entries }
    }

    /// Parse and fully validate a revision's state JSON.
    pub fn parse(bytes: &[u8]) -> Result<State> {
        let (state, mut problems) = Self::parse_lenient(bytes)?;
        problems.extend(state.validate());
        if problems.is_empty() {
            Ok(state)
        } else {
            Err(Error::Invalid(Problems(problems)))
        }
    }

    /// Parse a state JSON, keeping going past bad entries: every problem found
    /// while reading the entries is returned beside the state (a document that
    /// did not parse stays in the state as plain JSON). Fails only when the
    /// input is not a JSON object at all.
    pub fn parse_lenient(bytes: &[u8]) -> Result<(State, Vec<Problem>)> {
        let raw: RawMembers = serde_json::from_slice(bytes).map_err(|e| Error::Json {
            what: "state".into(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let mut entries = BTreeMap::new();
        for (key, value) in raw.0 {
            if entries.contains_key(&key) {
                problems.push(Problem::new(&key, "duplicate key in the state JSON"));
                continue;
            }
            if key != "#spec" {
                if let Some(why) = path_problem(&key) {
                    problems.push(Problem::new(&key, format!("bad key: {why}")));
                }
            }
            let entry = parse_entry(&key, value, &mut problems);
            entries.insert(key, entry);
        }
        if !entries.contains_key("#spec") {
            problems.push(Problem::new(
                "#spec",
                format!("missing; expected \"{SPEC_STATE}\""),
            ));
        }
        Ok((State { entries }, problems))
    }

    /// Build a state from a JSON value (as from another state's subset).
    pub fn from_value(value: &Value) -> Result<State> {
        Self::parse(&canonical::to_vec(value))
    }

    /// The state as a JSON value.
    pub fn to_value(&self) -> Value {
        let map: Map<String, Value> = self
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.to_value()))
            .collect();
        Value::Object(map)
    }

    /// The canonical bytes of the state: what pvr writes and signs.
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical::to_vec(&self.to_value())
    }

    /// The sha256 of the canonical state.
    pub fn id(&self) -> ObjectId {
        ObjectId::of_bytes(&self.to_canonical())
    }

    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Insert or replace an entry. The caller validates the result.
    pub fn insert(&mut self, key: impl Into<String>, entry: Entry) -> Option<Entry> {
        self.entries.insert(key.into(), entry)
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.entries.remove(key)
    }

    /// Every (key, object id) of the state.
    pub fn objects(&self) -> impl Iterator<Item = (&str, &ObjectId)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.object_id().map(|id| (k.as_str(), id)))
    }

    /// The distinct object ids the state refers to.
    pub fn object_ids(&self) -> BTreeSet<ObjectId> {
        self.objects().map(|(_, id)| id.clone()).collect()
    }

    /// The containers, by directory name, with their run.json.
    /// The anti-rollback version the state declares in `version.json`
    /// (`{"version": N}`, N a non-negative integer); 0 when it has none.
    /// Covered by signatures like every key, so only a signer can raise it.
    pub fn version(&self) -> std::result::Result<u64, String> {
        match self.entries.get(crate::layout::VERSION_KEY) {
            None => Ok(0),
            Some(Entry::Json(v)) => v
                .get("version")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| {
                    format!(
                        "{}: \"version\" must be a non-negative integer",
                        crate::layout::VERSION_KEY
                    )
                }),
            Some(_) => Err(format!(
                "{}: not a JSON document",
                crate::layout::VERSION_KEY
            )),
        }
    }

    pub fn containers(&self) -> BTreeMap<&str, &RunManifest> {
        self.entries
            .iter()
            .filter_map(|(k, e)| match (e, k.strip_suffix("/run.json")) {
                (Entry::Run(run), Some(name)) if !name.contains('/') => Some((name, &**run)),
                _ => None,
            })
            .collect()
    }

    pub fn bsp(&self) -> Option<&BspRun> {
        match self.entries.get("bsp/run.json") {
            Some(Entry::BspRun(b)) => Some(b),
            _ => None,
        }
    }

    pub fn device(&self) -> Option<&DeviceManifest> {
        match self.entries.get("device.json") {
            Some(Entry::Device(d)) => Some(d),
            _ => None,
        }
    }

    /// The groups in start order, and whether they are Pantavisor's defaults
    /// (no `device.json` groups and no legacy `groups.json`).
    pub fn groups(&self) -> (Vec<Group>, bool) {
        if let Some(groups) = self.device().and_then(|d| d.groups.clone()) {
            return (groups, false);
        }
        if let Some(Entry::Groups(groups)) = self.entries.get("groups.json") {
            return (groups.clone(), false);
        }
        (default_groups(), true)
    }

    /// The group each container belongs to, following Pantavisor's rules for
    /// containers that name none: with the default groups the first such
    /// container (by name) goes to `root` if no container is in `root`, the
    /// rest to `platform`; with state-defined groups they go to the last group.
    pub fn group_assignment(&self) -> BTreeMap<String, String> {
        let (groups, defaults) = self.groups();
        let containers = self.containers();
        let mut assignment = BTreeMap::new();
        let mut root_taken = false;
        for (name, run) in &containers {
            if let Some(g) = &run.group {
                root_taken |= g == "root";
                assignment.insert(name.to_string(), g.clone());
            }
        }
        let fallback = groups.last().map(|g| g.name.clone()).unwrap_or_default();
        for (name, run) in &containers {
            if run.group.is_some() {
                continue;
            }
            let group = if defaults {
                if root_taken {
                    "platform".to_string()
                } else {
                    root_taken = true;
                    "root".to_string()
                }
            } else {
                fallback.clone()
            };
            assignment.insert(name.to_string(), group);
        }
        assignment
    }

    /// The settings of container `name` with its group's defaults applied.
    pub fn effective(&self, name: &str) -> Option<Effective> {
        let run = *self.containers().get(name)?;
        let group_name = self.group_assignment().get(name)?.clone();
        let (groups, _) = self.groups();
        let group = groups.iter().find(|g| g.name == group_name);
        Some(Effective {
            status_goal: run
                .status_goal
                .or(group.and_then(|g| g.status_goal))
                .unwrap_or(StatusGoal::Started),
            restart_policy: run
                .restart_policy
                .or(group.and_then(|g| g.restart_policy))
                .unwrap_or(RestartPolicy::Container),
            auto_recovery: run
                .auto_recovery
                .clone()
                .or_else(|| group.and_then(|g| g.auto_recovery.clone())),
            group: group_name,
        })
    }

    /// The keys that make up part `name`: `name/…`, `_config/name/…` and
    /// `_sigs/name.json`.
    pub fn part_keys(&self, name: &str) -> Vec<&str> {
        let dir = format!("{name}/");
        let config = format!("_config/{name}/");
        let sig = format!("_sigs/{name}.json");
        self.entries
            .keys()
            .filter(|k| k.starts_with(&dir) || k.starts_with(&config) || **k == sig)
            .map(String::as_str)
            .collect()
    }

    /// A new state holding `#spec` and the keys of the named parts (a part is
    /// a directory such as `edge-app` or `bsp`, or one exact key), the way
    /// `pvr export --parts` selects them.
    pub fn select_parts(&self, parts: &[&str]) -> State {
        let mut entries = BTreeMap::new();
        for (k, e) in &self.entries {
            let keep = k == "#spec"
                || parts.iter().any(|p| {
                    let dir = if p.ends_with('/') {
                        p.to_string()
                    } else {
                        format!("{p}/")
                    };
                    k == p || k.starts_with(&dir)
                });
            if keep {
                entries.insert(k.clone(), e.clone());
            }
        }
        State { entries }
    }
}
