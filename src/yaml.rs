//! Reading YAML with errors for whoever wrote the file: the parser's message, with the path of
//! the key it is about (`dispatcher.batch`, `subscriptions[1].expire`) first and the snippet
//! headed by the file's path. For the configuration, and for tools built on this library that
//! read their own YAML (loadgen).

use std::borrow::Cow;

use serde::de::DeserializeOwned;

/// Parses YAML `text`, read from `source` (a file's path, or a name for the messages), into a
/// `T`; the error message names the line, the key where it can be read off the text, and what
/// is wrong, followed by the snippet.
pub fn from_str<T: DeserializeOwned>(text: &str, source: &str) -> Result<T, String> {
    // Comments are not read: kept, the parser buffers those after a section left empty while
    // it looks for the section's value, and refuses more than 32 (a section of the example
    // file commented out).
    let options = serde_saphyr::options! { emit_comments: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| error_message(&e, text, source))
}

/// A parse error's message: where it is, the key it is about (the parser names it only for a
/// value out of range, which our checks report), what is wrong, and the snippet, headed by
/// `source`.
fn error_message(e: &serde_saphyr::Error, text: &str, source: &str) -> String {
    use serde_saphyr::Error as E;
    let at = e
        .location()
        .and_then(|at| key_path_at(text, usize::try_from(at.line()).ok()?));
    let key = match e.without_snippet() {
        // Said at the mapping's last entry: the key is the mapping's own.
        E::SerdeMissingField { .. } => at.and_then(|k| Some(k.rsplit_once('.')?.0.to_owned())),
        // A value or key the schema refuses, where it is.
        E::Message { .. }
        | E::SerdeInvalidType { .. }
        | E::SerdeInvalidValue { .. }
        | E::SerdeInvalidLength { .. }
        | E::SerdeUnknownVariant { .. }
        | E::SerdeUnknownField { .. }
        | E::DuplicateMappingKey { .. }
        | E::InvalidScalar { .. }
        | E::InvalidBooleanStrict { .. }
        | E::NullIntoString { .. }
        // A value of the wrong kind: a scalar for a list or a section, a list for a string.
        | E::Unexpected { .. } => at,
        // YAML that does not parse: its line is all there is to say.
        _ => None,
    };
    let formatter = NamingKey {
        key: key.as_deref(),
    };
    let mut options = serde_saphyr::RenderOptions::new(&formatter);
    options.source_name = Some(source);
    e.render_with_options(options)
}

/// Words a parse error for whoever wrote the file (the parser's default adds advice to its
/// caller), with its key first, as our range checks do.
struct NamingKey<'a> {
    key: Option<&'a str>,
}

impl serde_saphyr::MessageFormatter for NamingKey<'_> {
    fn format_message<'e>(&self, err: &'e serde_saphyr::Error) -> Cow<'e, str> {
        let message = serde_saphyr::UserMessageFormatter.format_message(err);
        let Some(key) = self.key else {
            return message;
        };
        // Already named, or with an entry of it (`mi.listen[1]: ...`, from `CheckedList`).
        if message.starts_with(&format!("{key}: ")) || message.starts_with(&format!("{key}[")) {
            return message;
        }
        // Our own checks name the key alone (`expire: ...`): the whole path replaces it.
        let last = key.rsplit(['.', ']']).next().unwrap_or(key);
        let rest = message
            .strip_prefix(last)
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(&message);
        Cow::Owned(format!("{key}: {rest}"))
    }
}

/// The path of what is on 1-based `line` of block-style YAML `text`: its key, or for a value
/// alone on its line the entry it belongs to, with the keys and sequence indices above it
/// (`dispatcher.queue_capacity`, `subscriptions[1].socket`, `mi.listen[0]`). `None` where a
/// line on the way is not read (flow style, quoted or nested structures it cannot follow).
fn key_path_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = line.checked_sub(1)?;
    let mut here = YamlLine::read(lines.get(at)?)?;
    if here.nested {
        return None;
    }
    // Innermost first.
    let mut path: Vec<String> = here.key.map(str::to_owned).into_iter().collect();
    // Each turn finds what holds the mapping (or value) `here` is part of.
    while here.key_column > 0 || here.dash_column.is_some() {
        // A sequence item, if `here` starts one.
        let mut item = here.dash_column;
        let mut index = 0;
        let parent = loop {
            at = at.checked_sub(1)?;
            let Some(l) = YamlLine::read(lines[at]) else {
                continue;
            };
            match item {
                // Counting the items before ours, up to the key that holds the sequence.
                Some(dash) if l.dash_column == Some(dash) => {
                    if l.nested {
                        return None;
                    }
                    index += 1;
                }
                Some(dash) if l.key_column <= dash => break l,
                Some(_) => {}
                // A less indented entry: the key whose value our mapping is.
                None if l.key_column < here.key_column && l.key.is_some() && !l.nested => {
                    break l;
                }
                // The dash of the item our mapping is (on the line of its first key, or alone).
                None if l.dash_column.is_some_and(|d| d < here.key_column)
                    && (l.key_column == here.key_column || l.bare_dash) =>
                {
                    item = l.dash_column;
                }
                // Less indented, and not a plain key: a form not followed here.
                None if l.key_column < here.key_column => return None,
                None => {}
            }
        };
        if parent.nested {
            return None;
        }
        if item.is_some() {
            path.push(format!("[{index}]"));
        }
        path.push(parent.key?.to_owned());
        here = parent;
    }
    let mut joined = String::new();
    for part in path.iter().rev() {
        if !joined.is_empty() && !part.starts_with('[') {
            joined.push('.');
        }
        joined.push_str(part);
    }
    (!joined.is_empty()).then_some(joined)
}

/// One line of block-style YAML, as [`key_path_at`] reads it.
struct YamlLine<'a> {
    /// The column of its `- `, if it starts a sequence item.
    dash_column: Option<usize>,
    /// The column its key (or value) starts at.
    key_column: usize,
    /// The key it starts, if any: plain (letters, digits, `_`), quotes taken off.
    key: Option<&'a str>,
    /// A `-` alone: the item's content starts on the next line.
    bare_dash: bool,
    /// An item of a sequence in a sequence (`- - a`): not followed.
    nested: bool,
}

impl<'a> YamlLine<'a> {
    /// `None` for a blank or comment line.
    fn read(line: &'a str) -> Option<Self> {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let mut rest = line[indent..].trim_end();
        if rest.is_empty() || rest.starts_with('#') {
            return None;
        }
        let mut dash_column = None;
        let mut key_column = indent;
        let is_item = |r: &str| r == "-" || r.starts_with("- ");
        if is_item(rest) {
            dash_column = Some(indent);
            let after = rest[1..].trim_start_matches(' ');
            key_column = line.len() - line[indent + 1..].trim_start_matches(' ').len();
            rest = after;
        }
        let nested = dash_column.is_some() && is_item(rest);
        let key = rest.split_once(':').and_then(|(k, v)| {
            let k = ['"', '\'']
                .into_iter()
                .find_map(|q| k.strip_prefix(q)?.strip_suffix(q))
                .unwrap_or(k);
            let plain = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            (plain && (v.is_empty() || v.starts_with([' ', '#']))).then_some(k)
        });
        Some(YamlLine {
            dash_column,
            key_column,
            key: key.filter(|_| !nested),
            bare_dash: dash_column.is_some() && rest.is_empty(),
            nested,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_at_a_line_is_named_with_its_parents() {
        let text = "\
# comment
dispatcher:
  batch: 3

  queue_capacity: lots   # why
subscriptions:
  - event: E_A
    socket: x
  -
    event: E_B
    coalesce:
      max_bytes: 9
- event: E_C
mi:
  listen: [a, b]
  allow_targets:
    - udp:x
    - unix:/y
";
        let at = |line| key_path_at(text, line);
        assert_eq!(at(1), None);
        assert_eq!(at(2).as_deref(), Some("dispatcher"));
        assert_eq!(at(5).as_deref(), Some("dispatcher.queue_capacity"));
        assert_eq!(at(7).as_deref(), Some("subscriptions[0].event"));
        assert_eq!(at(8).as_deref(), Some("subscriptions[0].socket"));
        assert_eq!(at(10).as_deref(), Some("subscriptions[1].event"));
        assert_eq!(
            at(12).as_deref(),
            Some("subscriptions[1].coalesce.max_bytes")
        );
        assert_eq!(at(15).as_deref(), Some("mi.listen"));
        // A value alone on its line: the entry it belongs to.
        assert_eq!(at(17).as_deref(), Some("mi.allow_targets[0]"));
        assert_eq!(at(99), None);

        let at = |text: &str, line| key_path_at(text, line);
        // A quoted key is read; a less indented line that is not read ends the search.
        let quoted = "s:\n  - e: 1\n    \"c\":\n      m: x\n";
        assert_eq!(at(quoted, 4).as_deref(), Some("s[0].c.m"));
        assert_eq!(at("s:\n  - e: 1\n    a-b:\n      m: x\n", 4), None);
        // A value on the line after its key.
        assert_eq!(at("d:\n  batch:\n    3x\n", 3).as_deref(), Some("d.batch"));
        // Sequences in sequences are not followed.
        assert_eq!(at("a:\n  - - b: 1\n    - c: 2\n", 3), None);
    }
}
