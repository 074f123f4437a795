//! Events: a validated name and ordered, optionally named parameters.
//!
//! Parameters live in [`Params`], which stores them packed in one byte buffer. Up to
//! [`Params::INLINE_BYTES`] bytes of parameters are kept inline, so a typical event is built,
//! sent through the dispatcher's queue and encoded without touching the heap. Larger ones take
//! a heap buffer that goes back to a stack of spares when they are dropped, for the next
//! large params to reuse: in steady state they do not touch the allocator either.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::encode::Escapes;
use crate::error::EventError;
use crate::recycle;

/// A parameter value: the line format carries strings, `jsonrpc` also integers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// A signed integer, written in decimal.
    Int(i64),
    /// A UTF-8 string.
    Str(String),
}

/// An owned parameter: an optional name and a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    /// The name; `None` for an unnamed (positional) parameter.
    pub name: Option<String>,
    /// The value.
    pub value: Value,
}

impl Param {
    /// A named parameter.
    pub fn named(name: impl Into<String>, value: Value) -> Self {
        Param {
            name: Some(name.into()),
            value,
        }
    }

    /// An unnamed (positional) parameter.
    pub fn unnamed(value: Value) -> Self {
        Param { name: None, value }
    }

    /// Borrows this parameter.
    pub fn as_ref(&self) -> ParamRef<'_> {
        ParamRef {
            name: self.name.as_deref(),
            value: match &self.value {
                Value::Int(n) => ValueRef::Int(*n),
                Value::Str(s) => ValueRef::Str(s),
            },
        }
    }
}

/// A borrowed parameter value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueRef<'a> {
    /// A signed integer.
    Int(i64),
    /// A string.
    Str(&'a str),
}

impl ValueRef<'_> {
    /// Copies the value into an owned [`Value`].
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Int(n) => Value::Int(n),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
        }
    }
}

/// A borrowed parameter, as yielded by [`Params::iter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamRef<'a> {
    /// The name; `None` for an unnamed parameter.
    pub name: Option<&'a str>,
    /// The value.
    pub value: ValueRef<'a>,
}

impl ParamRef<'_> {
    /// Copies the parameter into an owned [`Param`].
    pub fn to_owned(self) -> Param {
        Param {
            name: self.name.map(str::to_owned),
            value: self.value.to_owned(),
        }
    }
}

/// Checks an event name: non-empty, no `\n` or `\r` (they would break the framing).
pub fn validate_event_name(name: &str) -> Result<(), EventError> {
    if name.is_empty() {
        return Err(EventError::EmptyEventName);
    }
    if name.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Err(EventError::EventNameLineBreak {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Checks a parameter name: no `\n`, `\r`, `"`, `'`, no `::`, and no `:` at the end (the line
/// format could not tell it from its `::` separator).
pub fn validate_param_name(name: &str) -> Result<(), EventError> {
    let bytes = name.as_bytes();
    let bad = |reason: &'static str| EventError::InvalidParamName {
        name: name.to_owned(),
        reason,
    };
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => return Err(bad("contains a line feed")),
            b'\r' => return Err(bad("contains a carriage return")),
            b'"' => return Err(bad("contains a double quote")),
            b'\'' => return Err(bad("contains a single quote")),
            b':' if bytes.get(i + 1) == Some(&b':') => return Err(bad("contains '::'")),
            _ => {}
        }
    }
    // `a:` + `::` would read back as the name `a` and a value starting with `:`.
    if bytes.last() == Some(&b':') {
        return Err(bad(
            "ends with ':' (it would merge with the '::' separator)",
        ));
    }
    Ok(())
}

/// The longest parameter name [`Params`] holds, in bytes (its length is packed in 16 bits).
pub(crate) const MAX_PARAM_NAME_LEN: usize = u16::MAX as usize;

/// Checks that [`Params`] can hold the parameter name `name` ([`MAX_PARAM_NAME_LEN`]).
pub(crate) fn check_param_name_len(name: &str) -> Result<(), EventError> {
    if name.len() > MAX_PARAM_NAME_LEN {
        return Err(EventError::InvalidParamName {
            name: name.to_owned(),
            reason: crate::error::PARAM_NAME_TOO_LONG,
        });
    }
    Ok(())
}

/// How [`Params::push_with`] takes a parameter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Push {
    /// From the application: the name is validated, and what a string value needs escaped is
    /// found now (see [`Escapes`]).
    Built,
    /// From a decoder: any name is kept (one the line format cannot carry is marked), and a
    /// string value is marked as possibly needing every escape.
    Decoded,
}

/// A validated event name. Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventName(Arc<str>);

impl EventName {
    /// Validates `name` (non-empty, no line breaks).
    pub fn new(name: &str) -> Result<Self, EventError> {
        validate_event_name(name)?;
        Ok(EventName(Arc::from(name)))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EventName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Layout of one packed parameter: a tag byte, then the name (`u16` length + bytes) if the tag
// says so, then the value: `i64` for an int, `u32` length + bytes for a string. Little endian.
// A string's tag also holds its `Escapes`, found once in `push` (or all set: not looked for).
const TAG_NAMED: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_LINE_QUOTE: u8 = 4;
const TAG_JSON_ESCAPE: u8 = 8;

/// Ordered parameters of an event, packed in one buffer that stays inline while it is small.
///
/// Names are validated as they are added (a decoder of `jsonrpc` keeps any key, marked if the
/// line format cannot carry it); duplicate names are kept, in order.
///
/// ```
/// use event_datagram::{Params, ValueRef};
///
/// let params = Params::new().str("ip", "192.168.2.11")?.int("attempts", 3)?;
/// let names: Vec<_> = params.iter().map(|p| p.name).collect();
/// assert_eq!(names, [Some("ip"), Some("attempts")]);
/// assert_eq!(params.iter().nth(1).unwrap().value, ValueRef::Int(3));
/// # Ok::<(), event_datagram::EventError>(())
/// ```
#[derive(Clone, Default)]
pub struct Params {
    bytes: PackedBytes,
    count: u32,
    /// A name the line format cannot carry is among them (only a decoded `jsonrpc` key, see
    /// [`push_decoded`](Self::push_decoded)).
    non_line_name: bool,
}

impl Params {
    /// How many bytes of packed parameters are stored without a heap allocation.
    ///
    /// Each parameter takes a tag byte, then, if named, 2 bytes of name length and the name;
    /// then a string takes 4 bytes of length and its bytes, an integer 8 bytes. So a named
    /// string takes its name and value plus 7 bytes, an unnamed one its value plus 5; a named
    /// integer its name plus 11 bytes, an unnamed one 9 bytes.
    pub const INLINE_BYTES: usize = INLINE;

    /// No parameters.
    pub const fn new() -> Self {
        Params {
            bytes: PackedBytes::new(),
            count: 0,
            non_line_name: false,
        }
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Bytes of packed parameters: about what their encoding takes, in either format, when
    /// nothing needs escaping.
    pub(crate) fn packed_len(&self) -> usize {
        self.bytes.as_slice().len()
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when the parameters are stored inline (no heap allocation).
    pub fn is_inline(&self) -> bool {
        matches!(self.bytes, PackedBytes::Inline { .. })
    }

    /// Bytes of heap the parameters hold: 0 inline, else their buffer's capacity.
    #[inline]
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.bytes {
            PackedBytes::Inline { .. } => 0,
            PackedBytes::Heap(v) => v.capacity(),
        }
    }

    /// Removes all parameters, keeping any heap capacity for reuse.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
        self.non_line_name = false;
    }

    /// Appends a parameter; `name` is validated, `None` means unnamed.
    pub fn push(&mut self, name: Option<&str>, value: ValueRef<'_>) -> Result<(), EventError> {
        self.push_with(name, value, Push::Built)
    }

    /// [`push`](Self::push) for the decoders. What a string needs escaped is left for an
    /// encoder to find, if one ever reads it (received events are mostly only read). The name
    /// may be any string, as a `jsonrpc` key may: one the line format cannot carry (`it's`,
    /// `a::b`) is kept, marked, and the line encoder refuses it
    /// ([`EncodeError::ParamNameNotLine`](crate::EncodeError)). The line decoder validates
    /// its names itself.
    pub(crate) fn push_decoded(
        &mut self,
        name: Option<&str>,
        value: ValueRef<'_>,
    ) -> Result<(), EventError> {
        self.push_with(name, value, Push::Decoded)
    }

    /// Appends a parameter, as `how` says.
    fn push_with(
        &mut self,
        name: Option<&str>,
        value: ValueRef<'_>,
        how: Push,
    ) -> Result<(), EventError> {
        let classify = how == Push::Built;
        let mut name_not_line = false;
        if let Some(name) = name {
            match validate_param_name(name) {
                Ok(()) => {}
                // Any JSON key is a name OpenSIPS may send: kept, and refused only where it
                // would be written as a line.
                Err(_) if how == Push::Decoded => name_not_line = true,
                Err(e) => return Err(e),
            }
            check_param_name_len(name)?;
        }
        let value = PackedValue::new(value, name.is_none_or(str::is_empty), classify)?;
        // Tag and name length; then the name; then the value's head and bytes: appended in
        // one go (one room check, one move to the heap at most).
        let name_len = (name.map_or(0, str::len) as u16).to_le_bytes();
        let head = [
            value.tag | name.map_or(0, |_| TAG_NAMED),
            name_len[0],
            name_len[1],
        ];
        let head = if name.is_some() {
            &head[..]
        } else {
            &head[..1]
        };
        self.bytes.push_all(&[
            head,
            name.map_or(&[][..], str::as_bytes),
            value.head(),
            value.bytes,
        ]);
        self.count += 1;
        self.non_line_name |= name_not_line;
        Ok(())
    }

    /// Replaces the value of the parameter at `index`, keeping its name and place: raising
    /// many events of one shape, a clone of a prepared `Params` with the few values that
    /// change set costs less than building each anew.
    ///
    /// ```
    /// use event_datagram::{Params, ValueRef};
    ///
    /// let prepared = Params::new().str("seq", "0")?.str("host", "pbx-1")?;
    /// let mut params = prepared.clone();
    /// params.set(0, ValueRef::Int(42))?;
    /// let values: Vec<_> = params.iter().map(|p| p.value).collect();
    /// assert_eq!(values, [ValueRef::Int(42), ValueRef::Str("pbx-1")]);
    /// # Ok::<(), event_datagram::EventError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`EventError::ValueTooLong`] for a string over 4 GiB (the parameter is unchanged).
    ///
    /// # Panics
    ///
    /// If `index` is not less than [`len`](Self::len).
    pub fn set(&mut self, index: usize, value: ValueRef<'_>) -> Result<(), EventError> {
        let len = self.len();
        assert!(
            index < len,
            "parameter index {index} out of range for {len} parameters"
        );
        // Offsets from what is left after each parameter: the layout is read in one place.
        let total = self.bytes.as_slice().len();
        let mut raw = self.raw();
        for _ in 0..index {
            raw.next();
        }
        let tag_at = total - raw.rest.len();
        let old = raw.next().expect("index < len");
        let value_end = total - raw.rest.len();
        let unnamed = old.name.is_none_or(<[u8]>::is_empty);
        let old_value_len = match old.value {
            RawValue::Int(_) => 8,
            // A string as long as the one it replaces (a prepared event's fixed-width values):
            // written over it. The general path packs the value on the stack, then copies it:
            // a clone of prepared params with two values set took about 1.5 times as long.
            RawValue::Str(old, _) => match value {
                ValueRef::Str(new) if new.len() == old.len() => {
                    let tag = string_tag(Escapes::of(new.as_bytes(), unnamed));
                    let bytes = self.bytes.as_mut_slice();
                    bytes[value_end - new.len()..value_end].copy_from_slice(new.as_bytes());
                    bytes[tag_at] = bytes[tag_at] & TAG_NAMED | tag;
                    return Ok(());
                }
                _ => 4 + old.len(),
            },
        };
        let named = self.bytes.as_slice()[tag_at] & TAG_NAMED;
        let value = PackedValue::new(value, unnamed, true)?;
        self.bytes.splice(
            value_end - old_value_len..value_end,
            &[value.head(), value.bytes],
        );
        self.bytes.as_mut_slice()[tag_at] = named | value.tag;
        Ok(())
    }

    /// Appends all of `other`'s parameters, in order. A copy of bytes: nothing is validated
    /// or looked at again, so a constant tail built once costs no more than its length.
    pub fn extend_from(&mut self, other: &Params) {
        self.bytes.push_all(&[other.bytes.as_slice()]);
        self.count += other.count;
        self.non_line_name |= other.non_line_name;
    }

    /// Appends a named string parameter (builder style).
    pub fn str(mut self, name: &str, value: &str) -> Result<Self, EventError> {
        self.push(Some(name), ValueRef::Str(value))?;
        Ok(self)
    }

    /// Appends a named integer parameter (builder style).
    pub fn int(mut self, name: &str, value: i64) -> Result<Self, EventError> {
        self.push(Some(name), ValueRef::Int(value))?;
        Ok(self)
    }

    /// Appends an unnamed string parameter (builder style; no name to validate).
    pub fn unnamed_str(mut self, value: &str) -> Result<Self, EventError> {
        self.push(None, ValueRef::Str(value))?;
        Ok(self)
    }

    /// Appends an unnamed integer parameter (builder style; no name to validate).
    pub fn unnamed_int(mut self, value: i64) -> Result<Self, EventError> {
        self.push(None, ValueRef::Int(value))?;
        Ok(self)
    }

    /// Iterates over the parameters in order.
    pub fn iter(&self) -> ParamsIter<'_> {
        ParamsIter { raw: self.raw() }
    }

    /// False when a name among them cannot be written in the line format (see
    /// [`push_decoded`](Self::push_decoded)).
    pub(crate) fn line_names(&self) -> bool {
        !self.non_line_name
    }

    /// Iterates over the parameters as bytes, for the encoders.
    #[inline]
    pub(crate) fn raw(&self) -> RawParams<'_> {
        RawParams {
            rest: self.bytes.as_slice(),
            left: self.count,
        }
    }

    /// Copies the parameters into owned [`Param`]s.
    pub fn to_vec(&self) -> Vec<Param> {
        self.iter().map(ParamRef::to_owned).collect()
    }

    /// True when the first parameter is named (`jsonrpc` then writes an object, else an array).
    pub fn first_is_named(&self) -> bool {
        self.count > 0 && self.bytes.as_slice()[0] & TAG_NAMED != 0
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        // Not the packed bytes: a decoded string's escapes may not have been looked for.
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for Params {}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> TryFrom<&'a [Param]> for Params {
    type Error = EventError;

    /// Validates every name, as [`Params::push`]: a name the line format cannot carry (which
    /// only decoded `jsonrpc` params hold) is refused here; clone the decoded `Params` to keep
    /// it.
    fn try_from(params: &'a [Param]) -> Result<Self, EventError> {
        let mut out = Params::new();
        for p in params {
            let p = p.as_ref();
            out.push(p.name, p.value)?;
        }
        Ok(out)
    }
}

impl<'a> IntoIterator for &'a Params {
    type Item = ParamRef<'a>;
    type IntoIter = ParamsIter<'a>;

    fn into_iter(self) -> ParamsIter<'a> {
        self.iter()
    }
}

/// The tag bits of a string value that needs `e`.
#[inline]
fn string_tag(e: Escapes) -> u8 {
    (if e.line_quote { TAG_LINE_QUOTE } else { 0 })
        | (if e.json_escape { TAG_JSON_ESCAPE } else { 0 })
}

/// A value as [`Params`] packs it: its tag bits, its fixed-size head (the int, or the string's
/// length), and the string's bytes.
struct PackedValue<'a> {
    tag: u8,
    head: [u8; 8],
    head_len: usize,
    bytes: &'a [u8],
}

impl<'a> PackedValue<'a> {
    /// `value` packed; `unnamed`: its parameter has no name or an empty one; `classify`: find
    /// what a string needs escaped now (else it is marked as possibly needing every escape).
    #[inline]
    fn new(value: ValueRef<'a>, unnamed: bool, classify: bool) -> Result<Self, EventError> {
        Ok(match value {
            ValueRef::Int(n) => PackedValue {
                tag: TAG_INT,
                head: n.to_le_bytes(),
                head_len: 8,
                bytes: &[],
            },
            ValueRef::Str(s) => {
                let len = u32::try_from(s.len())
                    .map_err(|_| EventError::ValueTooLong { len: s.len() })?;
                let e = if classify {
                    Escapes::of(s.as_bytes(), unnamed)
                } else {
                    Escapes::MAYBE
                };
                let mut head = [0; 8];
                head[..4].copy_from_slice(&len.to_le_bytes());
                PackedValue {
                    tag: string_tag(e),
                    head,
                    head_len: 4,
                    bytes: s.as_bytes(),
                }
            }
        })
    }

    #[inline]
    fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }
}

/// Iterator over [`Params`], yielding [`ParamRef`]s in order.
#[derive(Clone)]
pub struct ParamsIter<'a> {
    raw: RawParams<'a>,
}

impl<'a> Iterator for ParamsIter<'a> {
    type Item = ParamRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<ParamRef<'a>> {
        // The bytes were copied from `&str`s by `Params::push`, in whole.
        let as_str = |b| std::str::from_utf8(b).expect("packed params hold whole UTF-8 strings");
        let p = self.raw.next()?;
        Some(ParamRef {
            name: p.name.map(as_str),
            value: match p.value {
                RawValue::Int(n) => ValueRef::Int(n),
                RawValue::Str(s, _) => ValueRef::Str(as_str(s)),
            },
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.raw.size_hint()
    }
}

/// A parameter as the encoders read it: names and strings as the UTF-8 bytes they were built
/// from, not validated again (encoders write bytes; validating on every encode would cost a
/// second pass over every value).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawParam<'a> {
    pub name: Option<&'a [u8]>,
    pub value: RawValue<'a>,
}

/// A [`RawParam`]'s value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RawValue<'a> {
    Int(i64),
    Str(&'a [u8], Escapes),
}

/// Iterator over the packed parameters as [`RawParam`]s.
#[derive(Clone)]
pub(crate) struct RawParams<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> RawParams<'a> {
    #[inline(always)]
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    #[inline(always)]
    fn take_array<const N: usize>(&mut self) -> [u8; N] {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .expect("packed params are well formed");
        self.rest = tail;
        *head
    }
}

impl<'a> Iterator for RawParams<'a> {
    type Item = RawParam<'a>;

    // Always inlined: in the encoders' loops it is most of the per-parameter cost otherwise.
    #[inline(always)]
    fn next(&mut self) -> Option<RawParam<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let [tag] = self.take_array::<1>();
        let name = if tag & TAG_NAMED != 0 {
            let len = u16::from_le_bytes(self.take_array());
            Some(self.take(len as usize))
        } else {
            None
        };
        let value = if tag & TAG_INT != 0 {
            RawValue::Int(i64::from_le_bytes(self.take_array()))
        } else {
            let len = u32::from_le_bytes(self.take_array());
            let escapes = Escapes {
                line_quote: tag & TAG_LINE_QUOTE != 0,
                json_escape: tag & TAG_JSON_ESCAPE != 0,
            };
            RawValue::Str(self.take(len as usize), escapes)
        };
        Some(RawParam { name, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for ParamsIter<'_> {}

const INLINE: usize = 248;

/// A byte vector that lives inline up to [`INLINE`] bytes, then moves to the heap once, into
/// a buffer from [`recycle`] that goes back there when dropped.
// The inline variant is large on purpose: it is what keeps small events off the heap.
#[allow(clippy::large_enum_variant)]
enum PackedBytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Default for PackedBytes {
    fn default() -> Self {
        Self::new()
    }
}

impl PackedBytes {
    const fn new() -> Self {
        PackedBytes::Inline {
            len: 0,
            buf: [0; INLINE],
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            PackedBytes::Inline { len, buf } => &buf[..*len as usize],
            PackedBytes::Heap(v) => v,
        }
    }

    fn clear(&mut self) {
        match self {
            PackedBytes::Inline { len, .. } => *len = 0,
            PackedBytes::Heap(v) => v.clear(),
        }
    }

    #[inline]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            PackedBytes::Inline { len, buf } => &mut buf[..*len as usize],
            PackedBytes::Heap(v) => v,
        }
    }

    /// Appends `pieces` back to back (one room check, one move to the heap at most).
    #[inline]
    fn push_all<const N: usize>(&mut self, pieces: &[&[u8]; N]) {
        let end = self.as_slice().len();
        self.splice(end..end, pieces);
    }

    /// Replaces the bytes at `range` with `pieces` back to back (one room check, one move to
    /// the heap at most).
    #[inline]
    fn splice<const N: usize>(&mut self, range: Range<usize>, pieces: &[&[u8]; N]) {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let old_len = self.as_slice().len();
        let new_len = old_len - range.len() + total;
        let room = match self {
            PackedBytes::Inline { .. } => INLINE,
            PackedBytes::Heap(v) => v.capacity(),
        };
        if new_len > room {
            // Into a heap buffer (of a larger class than a heap one it leaves: not `reserve`,
            // which would leave the classes; beyond them, at least twice as large, so that
            // growing stays linear). The buffer left goes back on drop.
            let class = match self {
                PackedBytes::Inline { .. } => new_len,
                PackedBytes::Heap(v) => new_len.max(2 * v.capacity()),
            };
            let old = self.as_slice();
            let mut v = recycle::take(class);
            v.extend_from_slice(&old[..range.start]);
            pieces.iter().for_each(|piece| v.extend_from_slice(piece));
            v.extend_from_slice(&old[range.end..]);
            *self = PackedBytes::Heap(v);
            return;
        }
        let buf: &mut [u8] = match self {
            PackedBytes::Inline { len, buf } => {
                *len = new_len as u8;
                buf
            }
            // At the end (a push): appended straight, not over zeros first.
            PackedBytes::Heap(v) if range.end == old_len => {
                v.truncate(range.start);
                pieces.iter().for_each(|piece| v.extend_from_slice(piece));
                return;
            }
            PackedBytes::Heap(v) => {
                v.resize(new_len.max(old_len), 0);
                v
            }
        };
        // The tail moves only when the length changes (a value set to one as long: not).
        if range.end < old_len && total != range.len() {
            buf.copy_within(range.end..old_len, range.start + total);
        }
        let mut at = range.start;
        for piece in pieces {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        if let PackedBytes::Heap(v) = self {
            v.truncate(new_len);
        }
    }
}

impl Clone for PackedBytes {
    fn clone(&self) -> Self {
        match self {
            PackedBytes::Inline { len, buf } => PackedBytes::Inline {
                len: *len,
                buf: *buf,
            },
            PackedBytes::Heap(v) => {
                let mut copy = recycle::take(v.len());
                copy.extend_from_slice(v);
                PackedBytes::Heap(copy)
            }
        }
    }
}

impl Drop for PackedBytes {
    fn drop(&mut self) {
        if let PackedBytes::Heap(v) = self {
            recycle::give(std::mem::take(v));
        }
    }
}

/// An event: a validated name and its parameters.
///
/// This is the general, owned form: what decoders return and what `evdgram encode` builds.
/// The dispatcher's hot path raises an [`EventId`](crate::EventId) with [`Params`] instead, so
/// the name is never copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    name: EventName,
    params: Params,
}

impl Event {
    /// An event named `name` with no parameters.
    pub fn new(name: &str) -> Result<Self, EventError> {
        Ok(Event {
            name: EventName::new(name)?,
            params: Params::new(),
        })
    }

    /// An event from a validated name and parameters.
    pub fn from_parts(name: EventName, params: Params) -> Self {
        Event { name, params }
    }

    /// An event from a name and owned parameters, validating both.
    pub fn with_params(name: &str, params: &[Param]) -> Result<Self, EventError> {
        Ok(Event {
            name: EventName::new(name)?,
            params: Params::try_from(params)?,
        })
    }

    /// The event name.
    pub fn name(&self) -> &EventName {
        &self.name
    }

    /// The parameters, in order.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The parameters, to add more.
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// Splits the event into its name and parameters.
    pub fn into_parts(self) -> (EventName, Params) {
        (self.name, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_validated() {
        assert_eq!(EventName::new(""), Err(EventError::EmptyEventName));
        assert!(matches!(
            EventName::new("E\nX"),
            Err(EventError::EventNameLineBreak { .. })
        ));
        assert!(matches!(
            EventName::new("E\rX"),
            Err(EventError::EventNameLineBreak { .. })
        ));
        assert_eq!(
            EventName::new("E_PIKE_BLOCKED").unwrap().as_str(),
            "E_PIKE_BLOCKED"
        );
    }

    #[test]
    fn param_names_are_validated() {
        for bad in [
            "a\nb", "a\rb", "a\"b", "a'b", "a::b", "::", "x::", "a:", ":",
        ] {
            let err = Params::new().str(bad, "v").unwrap_err();
            assert!(
                matches!(err, EventError::InvalidParamName { .. }),
                "{bad:?}: {err}"
            );
        }
        for good in ["", "a:b", ":a", "a: :b", "ip", "a b", "é"] {
            Params::new().str(good, "v").unwrap();
        }
    }

    /// The sizes [`Params::INLINE_BYTES`]' doc gives, to the byte.
    #[test]
    fn inline_bytes_hold_parameters_of_the_documented_sizes() {
        assert_eq!(Params::new().unnamed_int(1).unwrap().packed_len(), 9);
        assert_eq!(Params::new().int("ab", 1).unwrap().packed_len(), 2 + 11);
        assert_eq!(Params::new().str("ab", "xyz").unwrap().packed_len(), 5 + 7);
        assert_eq!(
            Params::new().unnamed_str("xyz").unwrap().packed_len(),
            3 + 5
        );
        // Ints, then a string that fills the rest exactly: inline; one byte more is not.
        let mut ints = Params::new();
        for i in 0..9 {
            ints = ints.unnamed_int(i).unwrap().int("i", i).unwrap();
        }
        let rest = Params::INLINE_BYTES - ints.packed_len();
        for full in [
            ints.clone().str("n", &"v".repeat(rest - 1 - 7)).unwrap(),
            ints.clone().unnamed_str(&"v".repeat(rest - 5)).unwrap(),
        ] {
            assert_eq!(full.packed_len(), Params::INLINE_BYTES);
            assert!(full.is_inline());
            assert!(!full.unnamed_str("").unwrap().is_inline());
        }
    }

    #[test]
    fn param_name_errors_state_the_rules_only_for_characters_and_stay_short() {
        let err = Params::new().str("it's", "v").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid parameter name \"it's\": it contains a single quote (names may not \
             contain \\n, \\r, \", ' or ::, nor end with :)"
        );
        let long = "k".repeat(70_000);
        let err = Params::new().str(&long, "v").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "invalid parameter name \"{}\"… (70000 bytes): it is longer than 65535 bytes",
                "k".repeat(64)
            )
        );
        let long = format!("{}'", "é".repeat(40_000));
        let err = Params::new().str(&long, "v").unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
        assert!(
            err.contains("… (80001 bytes): it contains a single quote (names"),
            "{err}"
        );
        let err = EventName::new(&format!("{}\n", "E".repeat(70_000))).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }

    #[test]
    fn params_round_trip_in_order_with_duplicates() {
        let p = Params::new()
            .str("k", "1")
            .unwrap()
            .str("k", "2")
            .unwrap()
            .unnamed_int(i64::MIN)
            .unwrap()
            .unnamed_str("")
            .unwrap()
            .int("", -7)
            .unwrap();
        let v = p.to_vec();
        assert_eq!(
            v,
            vec![
                Param::named("k", Value::Str("1".into())),
                Param::named("k", Value::Str("2".into())),
                Param::unnamed(Value::Int(i64::MIN)),
                Param::unnamed(Value::Str(String::new())),
                Param::named("", Value::Int(-7)),
            ]
        );
        assert_eq!(Params::try_from(&v[..]).unwrap(), p);
        assert!(p.is_inline());
    }

    #[test]
    fn params_spill_to_the_heap_once_and_keep_everything() {
        let big = "x".repeat(1000);
        let mut p = Params::new().str("a", "small").unwrap();
        p.push(Some("b"), ValueRef::Str(&big)).unwrap();
        assert!(!p.is_inline());
        let v = p.to_vec();
        assert_eq!(v[0].value, Value::Str("small".into()));
        assert_eq!(v[1].value, Value::Str(big));
        p.clear();
        assert!(p.is_empty() && p.iter().next().is_none());
    }

    #[test]
    fn a_param_that_just_fits_stays_inline_and_one_byte_more_spills() {
        // "a" + 7 bytes of framing (tag, name length, value length) around the value.
        for len in INLINE - 20..INLINE {
            let value = "v".repeat(len);
            let p = Params::new()
                .str("ab", "c")
                .unwrap()
                .str("a", &value)
                .unwrap();
            let packed = (1 + 2 + 2 + 4 + 1) + (1 + 2 + 1 + 4 + len);
            assert_eq!(p.packed_len(), packed);
            assert_eq!(p.is_inline(), packed <= INLINE, "{len}");
            let v = p.to_vec();
            assert_eq!(v[1].value, Value::Str(value), "{len}");
        }
    }

    #[test]
    fn extending_from_other_params_is_pushing_them_one_by_one() {
        let head = Params::new().str("a", "1").unwrap();
        let tail = Params::new()
            .unnamed_str("x::y")
            .unwrap()
            .str("q", "it's")
            .unwrap()
            .int("n", -3)
            .unwrap();
        let mut joined = head.clone();
        joined.extend_from(&tail);
        let mut one_by_one = head;
        for p in &tail {
            one_by_one.push(p.name, p.value).unwrap();
        }
        assert_eq!(joined, one_by_one);
        assert_eq!(joined.len(), 4);
        assert_same_encodings(&joined, &one_by_one);
    }

    /// `a` and `b` encode to the same bytes in every format.
    fn assert_same_encodings(a: &Params, b: &Params) {
        for format in crate::Format::ALL {
            let (mut x, mut y) = (vec![0; 8192], vec![0; 8192]);
            let x_len = format.encode("E", a, &mut x).unwrap();
            let y_len = format.encode("E", b, &mut y).unwrap();
            assert_eq!(x[..x_len], y[..y_len], "{format}: {a:?}");
        }
    }

    /// Setting a value gives what building the params with that value gives: the same
    /// parameters, packed bytes and encodings (so what the new value needs escaped is found
    /// anew), whether it grows, shrinks, keeps its length, changes kind, or moves the params
    /// to the heap.
    #[test]
    fn setting_a_value_is_building_with_it() {
        let big = "b".repeat(300);
        let huge = "h".repeat(5000);
        let quoted_600 = format!("{}\"", "y".repeat(599));
        let values = [
            // As long as values below: written over them, escapes found anew.
            ValueRef::Str("z"),
            ValueRef::Str("\n"),
            ValueRef::Str("abc"),
            ValueRef::Str("a\"c"),
            ValueRef::Str(":::"),
            ValueRef::Str(&quoted_600),
            ValueRef::Str(""),
            ValueRef::Str("short"),
            ValueRef::Str("a longer value than any before it"),
            ValueRef::Str("line\nbreak"),
            ValueRef::Str("say \"hi\""),
            ValueRef::Str("x::y"),
            ValueRef::Int(-7),
            ValueRef::Str(&big),
            ValueRef::Str(&huge),
        ];
        let starts: [&[Param]; 2] = [
            &[
                Param::named("a", Value::Str("1".into())),
                Param::unnamed(Value::Str("two".into())),
                Param::named("", Value::Int(3)),
                Param::named("d", Value::Str("\"4\"".into())),
            ],
            &[
                Param::unnamed(Value::Str("x".repeat(600))),
                Param::named("n", Value::Int(1)),
            ],
        ];
        for start in starts {
            for index in 0..start.len() {
                for value in values {
                    let mut set = Params::try_from(start).unwrap();
                    set.set(index, value).unwrap();
                    let mut built = start.to_vec();
                    built[index].value = value.to_owned();
                    let built = Params::try_from(&built[..]).unwrap();
                    assert_eq!(set, built, "{index} {value:?}");
                    assert_eq!(set.bytes.as_slice(), built.bytes.as_slice());
                    assert_same_encodings(&set, &built);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "parameter index 2 out of range for 2 parameters")]
    fn setting_past_the_last_parameter_panics() {
        let mut p = Params::new().str("a", "1").unwrap().int("b", 2).unwrap();
        let _ = p.set(2, ValueRef::Int(0));
    }

    #[test]
    fn a_failed_push_changes_nothing() {
        let mut p = Params::new().str("a", "1").unwrap();
        let before = p.clone();
        assert!(p.push(Some("bad\n"), ValueRef::Int(1)).is_err());
        assert_eq!(p, before);
    }
}
