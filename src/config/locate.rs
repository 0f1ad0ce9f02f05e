//! Finds the line and column of a config path in YAML text.
//!
//! serde gives positions only for syntax and type errors; errors found later
//! (a dangling reference, a rule that does not parse) know only their config
//! path. This walks the YAML event stream once and remembers where each path
//! starts, so those errors can point at a line too.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::ConfigError;

/// Positions of every mapping key and sequence item in one YAML document.
pub struct Locator {
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// A mapping; `awaiting_value` once a key has been read.
    Map { awaiting_value: bool },
    /// A sequence and the index of its next item.
    Seq { next: usize },
}

struct Walker {
    stack: Vec<Frame>,
    path: Vec<String>,
    positions: HashMap<String, (usize, usize)>,
}

impl Walker {
    fn joined(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    fn record(&mut self, mark: Marker) {
        let p = self.joined();
        // yaml-rust2 counts columns from 0.
        self.positions
            .entry(p)
            .or_insert((mark.line(), mark.col() + 1));
    }

    /// A node begins. Returns true when it is a mapping key (consumed here).
    fn node_starts(&mut self, key_text: Option<&str>, mark: Marker) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map { awaiting_value }) if !*awaiting_value => {
                *awaiting_value = true;
                self.path.push(key_text.unwrap_or("?").to_string());
                self.record(mark);
                true
            }
            Some(Frame::Map { awaiting_value }) => {
                *awaiting_value = false;
                false
            }
            Some(Frame::Seq { next }) => {
                let seg = format!("[{next}]");
                *next += 1;
                self.path.push(seg);
                self.record(mark);
                false
            }
            None => false,
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            // A scalar or alias value ends where it starts: drop its path segment at once.
            Event::Scalar(text, ..)
                if !self.node_starts(Some(&text), mark) && !self.stack.is_empty() =>
            {
                self.path.pop();
            }
            Event::Alias(_) if !self.node_starts(None, mark) && !self.stack.is_empty() => {
                self.path.pop();
            }
            Event::MappingStart(..) => {
                self.node_starts(None, mark);
                self.stack.push(Frame::Map {
                    awaiting_value: false,
                });
            }
            Event::SequenceStart(..) => {
                self.node_starts(None, mark);
                self.stack.push(Frame::Seq { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                if !self.stack.is_empty() {
                    self.path.pop();
                }
            }
            _ => {}
        }
    }
}

impl Locator {
    /// Indexes `text`; a document that does not parse yields an empty index.
    pub fn new(text: &str) -> Self {
        let mut walker = Walker {
            stack: Vec::new(),
            path: Vec::new(),
            positions: HashMap::new(),
        };
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Locator {
            positions: walker.positions,
        }
    }

    /// Line and column where `path` starts, or of its nearest located ancestor.
    pub fn position(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Fills in the position of each error that has none.
    pub fn fill(&self, errors: &mut [ConfigError]) {
        for e in errors.iter_mut().filter(|e| e.position.is_none()) {
            e.position = self.position(&e.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
http:
  routers:
    r1:
      rule: \"Path(`/`)\"
      middlewares:
        - a
        - b
      service: s
  services:
    s: { loadBalancer: { servers: [ { url: \"http://x\" } ] } }
";

    #[test]
    fn finds_keys_and_items() {
        let l = Locator::new(DOC);
        assert_eq!(l.position("http.routers.r1.rule"), Some((4, 7)));
        assert_eq!(l.position("http.routers.r1.service"), Some((8, 7)));
        assert_eq!(l.position("http.routers.r1.middlewares[1]"), Some((7, 11)));
        assert_eq!(
            l.position("http.services.s.loadBalancer.servers[0].url"),
            Some((10, 39))
        );
        // An unknown leaf falls back to its parent.
        assert_eq!(l.position("http.routers.r1.nope"), Some((3, 5)));
    }
}
