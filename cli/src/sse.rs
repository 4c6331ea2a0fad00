//! Owns the parsing of a server-sent event stream (WHATWG HTML §9.2.6, "Interpreting an event
//! stream") into events, line by line. Pure: it is fed lines and knows nothing about HTTP.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when the stream gave none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen, if any.
    pub id: Option<String>,
}

/// Accumulates fields until a blank line dispatches an event.
#[derive(Debug, Default)]
pub struct SseParser {
    event: Option<String>,
    data: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line (without its line ending; a trailing `\r` is removed). Returns an event
    /// when the line is blank and data was collected since the last one.
    pub fn push_line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let event = self.event.take();
            // Per the spec, an event without data is not dispatched.
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
                id: self.last_id.clone(),
            });
        }
        if line.starts_with(':') {
            return None; // A comment, e.g. a keep-alive.
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields do not change what we show.
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        text.split('\n')
            .filter_map(|l| parser.push_line(l))
            .collect()
    }

    #[test]
    fn dispatches_one_event_per_blank_line_with_its_name_and_data() {
        let events = parse("event: study\ndata: {\"a\":1}\n\nevent: study\ndata: {\"a\":2}\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, "study");
        assert_eq!(events[1].data, "{\"a\":2}");
    }

    #[test]
    fn joins_multi_line_data_and_keeps_the_last_id() {
        let events = parse("id: 7\ndata: a\ndata:b\n\n");
        assert_eq!(events[0].data, "a\nb");
        assert_eq!(events[0].event, "message");
        assert_eq!(events[0].id.as_deref(), Some("7"));
    }

    #[test]
    fn ignores_comments_crlf_and_events_without_data() {
        let events = parse(": keep-alive\r\n\r\nevent: study\r\n\r\nevent: x\r\ndata: 1\r\n\r\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "x");
        assert_eq!(events[0].data, "1");
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(parse("event: study\ndata: {}").is_empty());
    }
}
