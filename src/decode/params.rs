//! A decoded event's parameters as the reusable decoders hand them out: borrowed from the
//! datagram, never copied.
//!
//! A receiver mostly reads a few values of each event and moves on; copying every event's
//! parameters into [`Params`] first (and checking the copied strings are UTF-8 once more as it
//! reads them) was about a third of a receiver's decoding time. [`DecodedParams`] are the
//! decoder's notes of where each name and value is: reading one is slicing the datagram.

use std::fmt;
use std::ops::Range;

use crate::error::EventError;
use crate::event::{Param, ParamRef, Params, ParamsIter, ValueRef};

/// Where one decoded parameter is.
#[derive(Clone, Debug)]
pub(crate) struct Span {
    /// The name's bytes in the datagram; `None` for an unnamed parameter.
    pub name: Option<Range<usize>>,
    /// The value.
    pub value: SpanValue,
}

/// Where a decoded value is.
#[derive(Clone, Debug)]
pub(crate) enum SpanValue {
    /// A string, as it is in the datagram.
    Datagram(Range<usize>),
    /// A string the decoder unescaped into its scratch.
    Scratch(Range<usize>),
    /// An integer.
    Int(i64),
}

/// The parameters of one event read by a [`line::Decoder`](super::line::Decoder) or a
/// [`jsonrpc::Decoder`](super::jsonrpc::Decoder): names and values borrowed from the datagram
/// (or from the decoder, for a value it had to unescape), so reading them copies nothing.
/// [`to_params`](Self::to_params) copies them, to keep or to raise again.
///
/// ```
/// use event_datagram::decode::line::Decoder;
/// use event_datagram::{ParamRef, ValueRef};
///
/// let mut names = Vec::new();
/// Decoder::new().decode_each(b"E_A\nip::10.0.0.1\nx\n\n", |_, params| {
///     assert_eq!(params.len(), 2);
///     names.extend(params.iter().map(|p: ParamRef<'_>| p.name.map(str::to_owned)));
///     let kept = params.to_params().unwrap();
///     assert_eq!(kept.iter().nth(1).unwrap().value, ValueRef::Str("x"));
/// })?;
/// assert_eq!(names, [Some("ip".to_owned()), None]);
/// # Ok::<(), event_datagram::DecodeError>(())
/// ```
#[derive(Clone, Copy)]
pub struct DecodedParams<'a>(Source<'a>);

#[derive(Clone, Copy)]
enum Source<'a> {
    /// Read by a fast path: spans of the datagram's text and of the decoder's scratch.
    Spans {
        text: &'a str,
        scratch: &'a str,
        spans: &'a [Span],
    },
    /// Read by the complete `jsonrpc` decoder, into [`Params`].
    Packed(&'a Params),
}

impl<'a> DecodedParams<'a> {
    /// Parameters at `spans` of `text` (the datagram, known to be UTF-8) and of `scratch`.
    pub(crate) fn spans(text: &'a str, scratch: &'a str, spans: &'a [Span]) -> Self {
        DecodedParams(Source::Spans {
            text,
            scratch,
            spans,
        })
    }

    /// Parameters a decoder built as [`Params`].
    pub(crate) fn packed(params: &'a Params) -> Self {
        DecodedParams(Source::Packed(params))
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        match self.0 {
            Source::Spans { spans, .. } => spans.len(),
            Source::Packed(p) => p.len(),
        }
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates over the parameters in order.
    pub fn iter(&self) -> DecodedParamsIter<'a> {
        DecodedParamsIter(match self.0 {
            Source::Spans {
                text,
                scratch,
                spans,
            } => IterSource::Spans {
                text,
                scratch,
                spans: spans.iter(),
            },
            Source::Packed(p) => IterSource::Packed(p.iter()),
        })
    }

    /// Copies the parameters into owned [`Param`]s.
    pub fn to_vec(&self) -> Vec<Param> {
        self.iter().map(ParamRef::to_owned).collect()
    }

    /// Copies the parameters into [`Params`], as the decoder read them: any name a `jsonrpc`
    /// notification had is kept (one the line format cannot carry is refused only by the line
    /// encoder). The error is for what [`Params`] cannot hold at all: a name over 65 535
    /// bytes, a value over 4 GiB (the decoders refuse such names already).
    pub fn to_params(&self) -> Result<Params, EventError> {
        if let Source::Packed(p) = self.0 {
            return Ok(p.clone());
        }
        let mut out = Params::new();
        for p in self.iter() {
            out.push_decoded(p.name, p.value)?;
        }
        Ok(out)
    }
}

impl<'a> IntoIterator for DecodedParams<'a> {
    type Item = ParamRef<'a>;
    type IntoIter = DecodedParamsIter<'a>;

    fn into_iter(self) -> DecodedParamsIter<'a> {
        self.iter()
    }
}

impl PartialEq for DecodedParams<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for DecodedParams<'_> {}

impl fmt::Debug for DecodedParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`DecodedParams`], yielding [`ParamRef`]s in order.
#[derive(Clone)]
pub struct DecodedParamsIter<'a>(IterSource<'a>);

#[derive(Clone)]
enum IterSource<'a> {
    Spans {
        text: &'a str,
        scratch: &'a str,
        spans: std::slice::Iter<'a, Span>,
    },
    Packed(ParamsIter<'a>),
}

impl<'a> Iterator for DecodedParamsIter<'a> {
    type Item = ParamRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<ParamRef<'a>> {
        match &mut self.0 {
            IterSource::Spans {
                text,
                scratch,
                spans,
            } => {
                let span = spans.next()?;
                // Ranges the decoder found at ASCII bytes of these strings: char boundaries.
                Some(ParamRef {
                    name: span.name.clone().map(|r| &text[r]),
                    value: match &span.value {
                        SpanValue::Datagram(r) => ValueRef::Str(&text[r.clone()]),
                        SpanValue::Scratch(r) => ValueRef::Str(&scratch[r.clone()]),
                        SpanValue::Int(n) => ValueRef::Int(*n),
                    },
                })
            }
            IterSource::Packed(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            IterSource::Spans { spans, .. } => spans.size_hint(),
            IterSource::Packed(it) => it.size_hint(),
        }
    }
}

impl ExactSizeIterator for DecodedParamsIter<'_> {}
