//! Queries (`p3_objectspace::query::Query::parse`, from clients and from
//! peers' search requests), each matched against an object made of the rest
//! of the input. Input: query text, a NUL, then the object's name/content.
//! A parsed query parses again from its text to the same query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p3_objectspace::{
    object::{MetaValue, Metadata},
    query::{Query, Searchable},
};

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(query) = Query::parse(text) else {
        return;
    };
    assert_eq!(Query::parse(query.text()).ok().as_ref(), Some(&query));
    let name = String::from_utf8_lossy(rest).into_owned();
    let mut meta = Metadata::new();
    meta.insert("row".into(), MetaValue::parse(&name));
    meta.insert("owner".into(), MetaValue::Str(name.clone()));
    meta.insert("size".into(), MetaValue::Num(rest.len() as f64));
    let object = Searchable {
        type_tag: name.clone(),
        name,
        size: rest.len() as u64,
        meta,
        content: Some(rest.to_vec()),
    };
    let _ = query.matches(&object);
    let _ = query.uses_content();
});
