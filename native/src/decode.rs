//! Columnar decoding of prediction messages: a batch's JSON message values in, its events
//! grouped by shape (model, version, feature names in order, presence of a prediction) out, each
//! shape's values already as columns — without a Python object per event or per number.
//!
//! It is a fast path in front of the Python codec (`streams/pipeline/codec.py`, msgspec's
//! typed decoding into `RawEvent`), never a replacement: a message it does not take exactly as
//! msgspec would is *refused*, and the caller hands it to the codec, which does what it always
//! did. Refused: a null value; more than `max_message_bytes`; anything but one event object or
//! a non-empty array of at most `max_events_per_message` event objects; malformed JSON (serde's
//! strict parser: what it refuses, msgspec refuses too or the codec decides); bytes that are not
//! UTF-8 in a string; a key other than the six of an event (msgspec skips unknown fields
//! without looking at them closely); a key twice in an event or in its features (msgspec keeps
//! the last, at the first one's place); a missing `model` or `features`; a field of another
//! type than msgspec's `RawEvent` takes; a feature value or prediction that is not a number,
//! string, boolean or null; a timestamp that is a string (RFC 3339: the codec parses those);
//! a number beyond the float range; a negative zero (msgspec reads `-0` as 0.0 and `-0.0` as
//! -0.0; serde reads both as -0.0).
//!
//! Numbers are parsed correctly rounded (serde_json's `float_roundtrip`), as msgspec does;
//! integers become the nearest float, as msgspec's do. Escapes are serde_json's (JSON's), the
//! same strings msgspec makes. Names and values are not checked against limits here: the
//! caller runs the codec's checks on each shape's names and on the columns.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A feature value or prediction as msgspec's `float | str | bool | None` reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'de> {
    Null,
    Bool(bool),
    Number(f64),
    Text(Cow<'de, str>),
}

/// One event of the common shape, its strings borrowed from the message where they hold no
/// escapes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Event<'de> {
    pub(crate) model: Cow<'de, str>,
    pub(crate) version: Option<Cow<'de, str>>,
    pub(crate) event_id: Option<Cow<'de, str>>,
    /// Epoch seconds; NaN when absent or null (JSON has no NaN).
    pub(crate) timestamp: f64,
    /// `Scalar::Null` when absent or null: the event has no prediction.
    pub(crate) prediction: Option<Scalar<'de>>,
    pub(crate) names: Vec<Cow<'de, str>>,
    pub(crate) values: Vec<Scalar<'de>>,
}

/// Why a message is refused (a message for tests; the caller only learns "refused").
type Refusal = String;

/// Decode one message value into its events, or refuse it. `None` (a JSON array of more than
/// `max_events` events, or none) and every other doubt is a refusal.
pub(crate) fn decode_message(value: &[u8], max_events: usize) -> Result<Vec<Event<'_>>, Refusal> {
    let mut deserializer = serde_json::Deserializer::from_slice(value);
    let events = deserializer
        .deserialize_any(MessageVisitor { max_events })
        .map_err(|error| error.to_string())?;
    deserializer.end().map_err(|error| error.to_string())?;
    if events.is_empty() {
        return Err("an empty array".into());
    }
    Ok(events)
}

struct MessageVisitor {
    max_events: usize,
}

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Vec<Event<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or an array of event objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![EventVisitor.visit_map(map)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // serde_json gives no size hint: room for a usual array from the start
        let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(self.max_events));
        while let Some(event) = seq.next_element_seed(EventSeed)? {
            if events.len() == self.max_events {
                return Err(de::Error::custom("too many events"));
            }
            events.push(event);
        }
        Ok(events)
    }
}

struct EventSeed;

impl<'de> DeserializeSeed<'de> for EventSeed {
    type Value = Event<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

const MODEL: u8 = 1;
const FEATURES: u8 = 2;
const VERSION: u8 = 4;
const EVENT_ID: u8 = 8;
const TIMESTAMP: u8 = 16;
const PREDICTION: u8 = 32;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut event = Event {
            timestamp: f64::NAN,
            ..Event::default()
        };
        let mut seen = 0_u8;
        while let Some(key) = map.next_key_seed(Text)? {
            let field = match key.as_ref() {
                "model" => MODEL,
                "features" => FEATURES,
                "model_version" => VERSION,
                "event_id" => EVENT_ID,
                "timestamp" => TIMESTAMP,
                "prediction" => PREDICTION,
                _ => return Err(de::Error::custom("an unknown field")),
            };
            if seen & field != 0 {
                return Err(de::Error::custom("a field twice"));
            }
            seen |= field;
            match field {
                MODEL => event.model = map.next_value_seed(Text)?,
                FEATURES => {
                    let (names, values) = map.next_value_seed(FeaturesSeed)?;
                    event.names = names;
                    event.values = values;
                }
                VERSION => event.version = map.next_value_seed(OptionalText)?,
                EVENT_ID => event.event_id = map.next_value_seed(OptionalText)?,
                TIMESTAMP => event.timestamp = map.next_value_seed(Timestamp)?,
                _ => {
                    event.prediction = match map.next_value_seed(ScalarSeed)? {
                        Scalar::Null => None,
                        value => Some(value),
                    }
                }
            }
        }
        if seen & (MODEL | FEATURES) != MODEL | FEATURES {
            return Err(de::Error::custom("model or features missing"));
        }
        Ok(event)
    }
}

/// A string, borrowed from the message unless it holds escapes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
}

/// A string or null.
struct OptionalText;

impl<'de> DeserializeSeed<'de> for OptionalText {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match deserializer.deserialize_any(ScalarVisitor)? {
            Scalar::Null => Ok(None),
            Scalar::Text(text) => Ok(Some(text)),
            _ => Err(de::Error::custom("not a string")),
        }
    }
}

/// A timestamp of epoch seconds, or null (NaN); a string (RFC 3339) is refused.
struct Timestamp;

impl<'de> DeserializeSeed<'de> for Timestamp {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match deserializer.deserialize_any(ScalarVisitor)? {
            Scalar::Null => Ok(f64::NAN),
            Scalar::Number(number) => Ok(number),
            _ => Err(de::Error::custom("not epoch seconds")),
        }
    }
}

/// A number, string, boolean or null.
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, string, boolean or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(value))
    }

    // Integers: the nearest float (Rust's `as` rounds to nearest, ties to even), as msgspec.
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(value as f64))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(value as f64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        if value == 0.0 && value.is_sign_negative() {
            // `-0` (msgspec: 0.0) or `-0.0` (msgspec: -0.0): serde gives -0.0 for both.
            return Err(E::custom("a negative zero"));
        }
        if !value.is_finite() {
            return Err(E::custom("a number beyond the float range"));
        }
        Ok(Scalar::Number(value))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(text.to_owned())))
    }
}

/// The features object: its names and values in order (a name twice: refused).
struct FeaturesSeed;

type Features<'de> = (Vec<Cow<'de, str>>, Vec<Scalar<'de>>);

impl<'de> DeserializeSeed<'de> for FeaturesSeed {
    type Value = Features<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(FeaturesVisitor)
    }
}

struct FeaturesVisitor;

impl<'de> Visitor<'de> for FeaturesVisitor {
    type Value = Features<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of features")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // serde_json gives no size hint: room for a typical event's features from the start
        let capacity = map.size_hint().unwrap_or(32).min(1024);
        let mut names = Vec::with_capacity(capacity);
        let mut values = Vec::with_capacity(capacity);
        while let Some(name) = map.next_key_seed(Text)? {
            names.push(name);
            values.push(map.next_value_seed(ScalarSeed)?);
        }
        // Names repeat from event to event: duplicates are checked once per shape (`Shapes`).
        Ok((names, values))
    }
}

/// Whether any name comes twice.
fn has_duplicates(names: &[Cow<'_, str>]) -> bool {
    let mut seen = HashSet::with_capacity(names.len());
    !names.iter().all(|name| seen.insert(name.as_ref()))
}

/// A column of one shape's values, as they come.
#[derive(Default)]
pub(crate) struct Column<'de> {
    pub(crate) values: Vec<Scalar<'de>>,
}

/// The events of one shape.
pub(crate) struct Group<'de> {
    pub(crate) model: Cow<'de, str>,
    pub(crate) version: Option<Cow<'de, str>>,
    pub(crate) names: Vec<Cow<'de, str>>,
    pub(crate) with_prediction: bool,
    /// Each event's message (its place in the values) and place in its message's array (0 for
    /// a single-event message).
    pub(crate) positions: Vec<i64>,
    pub(crate) indexes: Vec<i64>,
    /// The features' columns, then the prediction's if the shape has one.
    pub(crate) columns: Vec<Column<'de>>,
    pub(crate) event_ids: Vec<Option<Cow<'de, str>>>,
    pub(crate) timestamps: Vec<f64>,
}

impl<'de> Group<'de> {
    fn of(event: &Event<'de>) -> Self {
        let width = event.names.len() + usize::from(event.prediction.is_some());
        Group {
            model: event.model.clone(),
            version: event.version.clone(),
            names: event.names.clone(),
            with_prediction: event.prediction.is_some(),
            positions: Vec::new(),
            indexes: Vec::new(),
            columns: (0..width).map(|_| Column::default()).collect(),
            event_ids: Vec::new(),
            timestamps: Vec::new(),
        }
    }

    fn holds(&self, event: &Event<'_>) -> bool {
        self.with_prediction == event.prediction.is_some()
            && self.model == event.model
            && self.version == event.version
            && self.names == event.names
    }

    fn push(&mut self, event: Event<'de>, position: usize, index: usize) {
        self.positions.push(position as i64);
        self.indexes.push(index as i64);
        self.event_ids.push(event.event_id);
        self.timestamps.push(event.timestamp);
        let values = event.values.into_iter().chain(event.prediction);
        for (column, value) in self.columns.iter_mut().zip(values) {
            column.values.push(value);
        }
    }
}

/// The hasher of keys that are hashes already (of `RandomState`'s keyed hasher): the identity.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // only `write_u64` is expected; any other key still hashes (slowly)
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// The batch's groups, in order of their first event, and a lookup by shape.
#[derive(Default)]
pub(crate) struct Shapes<'de> {
    pub(crate) groups: Vec<Group<'de>>,
    /// Groups by `hash` (already a keyed hash: not hashed again).
    by_hash: HashMap<u64, Vec<usize>, BuildHasherDefault<Prehashed>>,
    hasher: std::collections::hash_map::RandomState,
    last: usize,
}

impl<'de> Shapes<'de> {
    /// A keyed hash of the event's whole shape: made-up shapes cannot crowd one bucket.
    fn hash(&self, event: &Event<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        event.model.as_ref().hash(&mut hasher);
        event.version.as_deref().hash(&mut hasher);
        event.prediction.is_some().hash(&mut hasher);
        for name in &event.names {
            name.as_ref().hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The group of the event's shape, if there is one yet (runs of one shape: the last group
    /// is tried first).
    fn find(&mut self, event: &Event<'_>) -> Option<usize> {
        if self
            .groups
            .get(self.last)
            .is_some_and(|group| group.holds(event))
        {
            return Some(self.last);
        }
        let found = self
            .by_hash
            .get(&self.hash(event))?
            .iter()
            .copied()
            .find(|&g| self.groups[g].holds(event))?;
        self.last = found;
        Some(found)
    }

    /// Add a message's events, or refuse the message (nothing of it added) if an event of a new
    /// shape names a feature twice.
    pub(crate) fn add(&mut self, events: Vec<Event<'de>>, position: usize) -> Result<(), Refusal> {
        let mut found = Vec::with_capacity(events.len());
        let mut checked: Option<&[Cow<'de, str>]> = None; // names found free of duplicates
        for event in &events {
            let group = self.find(event);
            if group.is_none() && checked != Some(event.names.as_slice()) {
                // a shape new to the batch (an array's events often share theirs: checked once)
                if has_duplicates(&event.names) {
                    return Err("a feature name twice".into());
                }
                checked = Some(&event.names);
            }
            found.push(group);
        }
        for (index, (event, group)) in events.into_iter().zip(found).enumerate() {
            // a shape new to the batch: found now if an earlier event of the message made it
            let group = match group.or_else(|| self.find(&event)) {
                Some(group) => group,
                None => {
                    let hash = self.hash(&event);
                    self.groups.push(Group::of(&event));
                    self.last = self.groups.len() - 1;
                    self.by_hash.entry(hash).or_default().push(self.last);
                    self.last
                }
            };
            self.groups[group].push(event, position, index);
        }
        Ok(())
    }
}

/// What a column becomes in Python, as the codec's `classify_column` sees it.
enum Kind {
    Nulls,
    Numbers,
    Categories,
    Mixed,
}

fn kind_of(values: &[Scalar<'_>]) -> Kind {
    let (mut numbers, mut categories) = (false, false);
    for value in values {
        match value {
            Scalar::Null => {}
            Scalar::Number(_) => numbers = true,
            Scalar::Bool(_) | Scalar::Text(_) => categories = true,
        }
    }
    match (numbers, categories) {
        (false, false) => Kind::Nulls,
        (true, false) => Kind::Numbers,
        (false, true) => Kind::Categories,
        (true, true) => Kind::Mixed,
    }
}

/// Python strings made once per distinct text of a call (categories repeat).
struct Strings<'py> {
    py: Python<'py>,
    made: HashMap<String, Bound<'py, PyString>>,
}

impl<'py> Strings<'py> {
    fn get(&mut self, text: &str) -> Bound<'py, PyString> {
        if let Some(made) = self.made.get(text) {
            return made.clone();
        }
        let made = PyString::new(self.py, text);
        if self.made.len() < 4096 {
            self.made.insert(text.to_owned(), made.clone());
        }
        made
    }

    fn optional(&mut self, text: Option<&str>) -> Bound<'py, PyAny> {
        match text {
            Some(text) => self.get(text).into_any(),
            None => self.py.None().into_bound(self.py),
        }
    }
}

/// A column for Python, and the largest magnitude of its numbers and longest category (in
/// characters, as Python's `len`) it holds.
fn column_to_python<'py>(
    values: &[Scalar<'_>],
    strings: &mut Strings<'py>,
    largest: &mut f64,
    longest: &mut usize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = strings.py;
    match kind_of(values) {
        Kind::Mixed => Ok(py.None().into_bound(py)),
        Kind::Numbers => {
            let numbers: Vec<f64> = values
                .iter()
                .map(|value| match value {
                    Scalar::Number(number) => *number,
                    _ => f64::NAN,
                })
                .collect();
            for number in &numbers {
                if number.abs() > *largest {
                    *largest = number.abs();
                }
            }
            Ok(PyArray1::from_vec(py, numbers).into_any())
        }
        Kind::Nulls | Kind::Categories => {
            let mut items = Vec::with_capacity(values.len());
            for value in values {
                items.push(match value {
                    Scalar::Text(text) => {
                        *longest = (*longest).max(text.chars().count());
                        strings.get(text).into_any()
                    }
                    Scalar::Bool(value) => {
                        // the codec's category for a boolean, which its length bound applies to
                        let text = if *value { "true" } else { "false" };
                        *longest = (*longest).max(text.len());
                        strings.get(text).into_any()
                    }
                    _ => py.None().into_bound(py),
                });
            }
            Ok(PyList::new(py, items)?.into_any())
        }
    }
}

fn group_to_python<'py>(
    group: &Group<'_>,
    strings: &mut Strings<'py>,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = strings.py;
    let (mut largest, mut longest) = (0.0_f64, 0_usize);
    let mut columns = Vec::with_capacity(group.columns.len());
    for column in &group.columns {
        columns.push(column_to_python(
            &column.values,
            strings,
            &mut largest,
            &mut longest,
        )?);
    }
    let names: Vec<Bound<'py, PyString>> = group.names.iter().map(|n| strings.get(n)).collect();
    // event ids are mostly unique: made afresh, not looked up
    let ids: Vec<Bound<'py, PyAny>> = group
        .event_ids
        .iter()
        .map(|id| match id {
            Some(id) => PyString::new(py, id).into_any(),
            None => py.None().into_bound(py),
        })
        .collect();
    PyTuple::new(
        py,
        [
            strings.get(&group.model).into_any(),
            strings.optional(group.version.as_deref()),
            PyTuple::new(py, names)?.into_any(),
            group
                .with_prediction
                .into_pyobject(py)?
                .to_owned()
                .into_any(),
            PyArray1::from_slice(py, &group.positions).into_any(),
            PyArray1::from_slice(py, &group.indexes).into_any(),
            PyList::new(py, columns)?.into_any(),
            PyList::new(py, ids)?.into_any(),
            PyArray1::from_slice(py, &group.timestamps).into_any(),
            largest.into_pyobject(py)?.into_any(),
            longest.into_pyobject(py)?.into_any(),
        ],
    )
}

/// Decode a batch's prediction messages column by column.
///
/// `values`: the messages' values (`bytes`, or `None` for a null value). Returns `(shapes,
/// refused)`: per shape of event, in order of its first event, a tuple `(model, version,
/// names, with_prediction, positions, indexes, columns, event_ids, timestamps, largest,
/// longest)` — `names` the feature names in order (the prediction not among them),
/// `positions` each event's message (its place in `values`, int64), `indexes` its place in
/// its message's array (0 for a single event), `columns` one per name and then the
/// prediction's if `with_prediction`: a float64 array (NaN: null) where the values are
/// numbers and nulls, a list of `str`/`None` where they are strings, booleans (`"true"`,
/// `"false"`) and nulls or nulls only, `None` where numbers and categories mix; `event_ids` a
/// list of `str`/`None`, `timestamps` epoch seconds (NaN: none), `largest` the largest
/// magnitude of a number in a numeric column, `longest` the longest category in characters.
/// `refused`: the positions of the messages left to the codec (see the module's doc),
/// ascending. Never raises on a message's content.
#[pyfunction]
pub(crate) fn decode_prediction_columns<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    max_message_bytes: usize,
    max_events_per_message: usize,
) -> PyResult<(Bound<'py, PyList>, Vec<usize>)> {
    let messages: Vec<Option<Bound<'py, PyBytes>>> = values
        .iter()
        .map(|value| value.cast_into::<PyBytes>().ok())
        .collect();
    let mut shapes = Shapes::default();
    let mut refused = Vec::new();
    for (position, message) in messages.iter().enumerate() {
        let taken = match message {
            Some(bytes) if bytes.as_bytes().len() <= max_message_bytes => {
                decode_message(bytes.as_bytes(), max_events_per_message)
                    .and_then(|events| shapes.add(events, position))
                    .is_ok()
            }
            _ => false,
        };
        if !taken {
            refused.push(position);
        }
    }
    let mut strings = Strings {
        py,
        made: HashMap::new(),
    };
    let groups = shapes
        .groups
        .iter()
        .map(|group| group_to_python(group, &mut strings))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((PyList::new(py, groups)?, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Result<Event<'_>, Refusal> {
        decode_message(json.as_bytes(), 10).map(|mut events| events.remove(0))
    }

    #[test]
    fn an_event() {
        let event = one(
            r#"{"model": "m", "features": {"a": 1, "b": "x\u00e9", "c": null, "d": true},
               "prediction": -2.5e3, "timestamp": 17, "event_id": null}"#,
        )
        .unwrap();
        assert_eq!(event.model, "m");
        assert_eq!(event.names, ["a", "b", "c", "d"]);
        assert_eq!(
            event.values,
            [
                Scalar::Number(1.0),
                Scalar::Text("xé".into()),
                Scalar::Null,
                Scalar::Bool(true)
            ]
        );
        assert_eq!(event.prediction, Some(Scalar::Number(-2500.0)));
        assert_eq!(event.timestamp, 17.0);
        assert_eq!(event.event_id, None);
    }

    #[test]
    fn refusals() {
        for json in [
            r#"{"model": "m", "features": {}, "extra": 1}"#,
            r#"{"model": "m", "model": "n", "features": {}}"#,
            r#"{"model": "m"}"#,
            r#"{"features": {}}"#,
            r#"{"model": 1, "features": {}}"#,
            r#"{"model": "m", "features": {"a": [1]}}"#,
            r#"{"model": "m", "features": {"a": 1e400}}"#,
            r#"{"model": "m", "features": {"a": -0}}"#,
            r#"{"model": "m", "features": {}, "timestamp": "2025-01-01T00:00:00Z"}"#,
            r#"{"model": "m", "features": {}, "timestamp": true}"#,
            r#"{"model": "m", "features": {}} x"#,
            r#"[]"#,
            r#"[{"model": "m", "features": {}}, 1]"#,
            r#"{"model": "m", "features": {"a": "\ud800"}}"#,
            r#"7"#,
        ] {
            assert!(one(json).is_err(), "{json}");
        }
        assert!(decode_message(&[b'"', 0xff, b'"'], 10).is_err());
        let many = format!("[{}]", [r#"{"model":"m","features":{}}"#; 11].join(","));
        assert!(decode_message(many.as_bytes(), 10).is_err());
        assert_eq!(decode_message(many.as_bytes(), 11).unwrap().len(), 11);
    }

    #[test]
    fn duplicate_feature_names_refuse_the_message() {
        let mut shapes = Shapes::default();
        let twice = decode_message(br#"{"model":"m","features":{"a":1,"a":2}}"#, 10).unwrap();
        assert!(shapes.add(twice, 0).is_err());
        assert!(shapes.groups.is_empty());
        // in an array, after events of a new shape checked once
        let later = decode_message(
            br#"[{"model":"m","features":{"a":1,"b":2}},{"model":"m","features":{"a":1,"b":2}},
                 {"model":"m","features":{"a":1,"a":2}}]"#,
            10,
        )
        .unwrap();
        assert!(shapes.add(later, 1).is_err());
        assert!(shapes.groups.is_empty());
    }

    #[test]
    fn events_are_grouped_by_shape() {
        let mut shapes = Shapes::default();
        for (position, json) in [
            r#"{"model":"m","features":{"a":1}}"#,
            r#"[{"model":"m","features":{"b":1}}, {"model":"m","features":{"a":2}}]"#,
            r#"{"model":"m","features":{"a":3},"prediction":1}"#,
        ]
        .iter()
        .enumerate()
        {
            let events = decode_message(json.as_bytes(), 10).unwrap();
            shapes.add(events, position).unwrap();
        }
        let sizes: Vec<_> = shapes.groups.iter().map(|g| g.positions.clone()).collect();
        assert_eq!(sizes, [vec![0, 1], vec![1], vec![2]]);
        assert_eq!(shapes.groups[0].indexes, [0, 1]);
    }
}
