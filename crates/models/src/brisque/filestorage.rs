//! A small reader for OpenCV `FileStorage` YAML (`%YAML:1.0`): just the subset
//! that `brisque_model_live.yml` and `brisque_range_live.yml` use.
//!
//! Supported: block mappings and sequences nested by indentation (spaces), `-`
//! items alone on their line or followed by a value, flow sequences `[ .. ]` and
//! flow mappings `{ .. }` that may span lines, plain or quoted scalars, `#`
//! comments, and type tags such as `!!opencv-matrix` (read and ignored: a
//! matrix is then a mapping with `rows`, `cols`, `dt` and `data`). Anchors,
//! aliases, block scalars and multiple documents are not.

/// A parsed value. Scalars stay text until a caller asks for a number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// Why a file could not be read, and on which line (1-based).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub reason: String,
}

impl Node {
    /// The value under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        let s = self.as_str()?;
        match s {
            ".inf" | ".Inf" | "+.inf" => Some(f64::INFINITY),
            "-.inf" | "-.Inf" => Some(f64::NEG_INFINITY),
            ".nan" | ".NaN" => Some(f64::NAN),
            // OpenCV writes `1024.`; Rust's parser accepts a trailing dot.
            _ => s.parse().ok(),
        }
    }

    pub fn as_usize(&self) -> Option<usize> {
        self.as_str()?.parse().ok()
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match self {
            Node::Seq(items) => Some(items),
            _ => None,
        }
    }
}

/// One logical line: a physical line, or several joined while a flow
/// collection is open.
struct Line {
    indent: usize,
    text: String,
    number: usize,
}

/// Parses a whole file into its top-level mapping.
pub(crate) fn parse(src: &str) -> Result<Node, SyntaxError> {
    let lines = logical_lines(src)?;
    if lines.is_empty() {
        return Ok(Node::Map(Vec::new()));
    }
    let mut pos = 0;
    let root = parse_block(&lines, &mut pos, lines[0].indent)?;
    if let Some(line) = lines.get(pos) {
        return Err(SyntaxError {
            line: line.number,
            reason: "unexpected indentation".into(),
        });
    }
    Ok(root)
}

fn err<T>(line: usize, reason: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        line,
        reason: reason.into(),
    })
}

/// Drops a `#` comment that is outside quotes and starts a word.
fn strip_comment(text: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev_space => return &text[..i],
            _ => {}
        }
        prev_space = c == ' ';
    }
    text
}

/// Net change in flow-collection depth over `text` (brackets inside quotes ignored).
fn flow_depth_change(text: &str) -> i64 {
    let mut quote = None;
    let mut depth = 0;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    depth
}

fn logical_lines(src: &str) -> Result<Vec<Line>, SyntaxError> {
    let mut out: Vec<Line> = Vec::new();
    let mut depth = 0i64;
    for (i, raw) in src.lines().enumerate() {
        let number = i + 1;
        let body = strip_comment(raw).trim_end();
        if depth > 0 {
            let last = out.last_mut().expect("an open flow collection has a line");
            last.text.push(' ');
            last.text.push_str(body.trim_start());
            depth += flow_depth_change(body);
            if depth < 0 {
                return err(number, "unbalanced `]` or `}`");
            }
            continue;
        }
        let trimmed = body.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        let indent = body.len() - trimmed.len();
        if body[..indent].contains('\t') {
            return err(number, "tab in indentation");
        }
        if indent == 0 && (trimmed.starts_with('%') || trimmed == "---") {
            continue; // `%YAML:1.0` directive, document start
        }
        if trimmed == "..." {
            break; // document end
        }
        depth = flow_depth_change(trimmed);
        if depth < 0 {
            return err(number, "unbalanced `]` or `}`");
        }
        out.push(Line {
            indent,
            text: trimmed.to_string(),
            number,
        });
    }
    if depth > 0 {
        let line = out.last().map_or(0, |l| l.number);
        return err(line, "flow collection `[`/`{` is never closed");
    }
    Ok(out)
}

/// `-` items: `Some(rest)` when the line is a sequence item.
fn seq_item(text: &str) -> Option<&str> {
    if text == "-" {
        Some("")
    } else {
        text.strip_prefix("- ").map(str::trim)
    }
}

/// Splits `key: value` (or `key:` at the end of the line).
fn split_key(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b':') if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                return Some((text[..i].trim(), text[i + 1..].trim()));
            }
            _ => {}
        }
    }
    None
}

/// Drops a leading `!!tag` from a value.
fn strip_tag(value: &str) -> &str {
    if value.starts_with('!') {
        value
            .split_once(' ')
            .map_or("", |(_, rest)| rest.trim_start())
    } else {
        value
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let quoted = s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')));
    if quoted {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

fn parse_block(lines: &[Line], pos: &mut usize, indent: usize) -> Result<Node, SyntaxError> {
    let is_seq = seq_item(&lines[*pos].text).is_some();
    let mut items = Vec::new();
    let mut entries = Vec::new();
    while let Some(line) = lines.get(*pos) {
        if line.indent < indent {
            break;
        }
        if line.indent > indent {
            return err(line.number, "unexpected indentation");
        }
        if is_seq {
            let Some(rest) = seq_item(&line.text) else {
                return err(line.number, "expected a `-` item");
            };
            *pos += 1;
            items.push(parse_value(
                lines,
                pos,
                indent,
                strip_tag(rest),
                line.number,
            )?);
        } else {
            let Some((key, rest)) = split_key(&line.text) else {
                return err(line.number, "expected `key: value`");
            };
            *pos += 1;
            let value = parse_value(lines, pos, indent, strip_tag(rest), line.number)?;
            entries.push((unquote(key), value));
        }
    }
    Ok(if is_seq {
        Node::Seq(items)
    } else {
        Node::Map(entries)
    })
}

/// The value after `key:` or `-`: inline, or a nested block on the next lines.
fn parse_value(
    lines: &[Line],
    pos: &mut usize,
    indent: usize,
    inline: &str,
    number: usize,
) -> Result<Node, SyntaxError> {
    if !inline.is_empty() {
        let mut chars = inline.char_indices().peekable();
        let node = parse_flow(inline, &mut chars, number, false)?;
        if let Some((i, _)) = chars.find(|(_, c)| !c.is_whitespace()) {
            return err(number, format!("unexpected text `{}`", &inline[i..]));
        }
        return Ok(node);
    }
    match lines.get(*pos) {
        Some(next) if next.indent > indent => parse_block(lines, pos, next.indent),
        _ => Ok(Node::Scalar(String::new())),
    }
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

fn skip_ws(chars: &mut Chars<'_>) {
    while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
}

/// A flow value: `[..]`, `{..}` or a scalar. Inside a flow collection a
/// scalar ends at `,`, `]` or `}` (and a mapping key at `:`).
fn parse_flow(
    text: &str,
    chars: &mut Chars<'_>,
    number: usize,
    in_flow: bool,
) -> Result<Node, SyntaxError> {
    skip_ws(chars);
    match chars.peek().map(|&(_, c)| c) {
        Some('[') => {
            chars.next();
            let mut items = Vec::new();
            loop {
                skip_ws(chars);
                if chars.next_if(|&(_, c)| c == ']').is_some() {
                    return Ok(Node::Seq(items));
                }
                items.push(parse_flow(text, chars, number, true)?);
                skip_ws(chars);
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((_, ']')) => return Ok(Node::Seq(items)),
                    _ => return err(number, "expected `,` or `]`"),
                }
            }
        }
        Some('{') => {
            chars.next();
            let mut entries = Vec::new();
            loop {
                skip_ws(chars);
                if chars.next_if(|&(_, c)| c == '}').is_some() {
                    return Ok(Node::Map(entries));
                }
                let key = flow_scalar(text, chars, true);
                if chars.next_if(|&(_, c)| c == ':').is_none() {
                    return err(number, format!("expected `:` after `{key}`"));
                }
                let value = parse_flow(text, chars, number, true)?;
                entries.push((unquote(&key), value));
                skip_ws(chars);
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((_, '}')) => return Ok(Node::Map(entries)),
                    _ => return err(number, "expected `,` or `}`"),
                }
            }
        }
        _ if in_flow => Ok(Node::Scalar(unquote(&flow_scalar(text, chars, false)))),
        _ => {
            let rest = chars.peek().map_or("", |&(i, _)| &text[i..]);
            chars.by_ref().for_each(drop);
            Ok(Node::Scalar(unquote(rest)))
        }
    }
}

fn flow_scalar(text: &str, chars: &mut Chars<'_>, key: bool) -> String {
    let start = chars.peek().map_or(text.len(), |&(i, _)| i);
    let mut end = start;
    let mut quote = None;
    while let Some(&(i, c)) = chars.peek() {
        match (quote, c) {
            (None, '"' | '\'') if i == start => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, ',' | ']' | '}') => break,
            (None, ':') if key => break,
            _ => {}
        }
        chars.next();
        end = i + c.len_utf8();
    }
    text[start..end].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(s: &str) -> Node {
        Node::Scalar(s.into())
    }

    #[test]
    fn reads_the_shapes_opencv_writes() {
        let src = "%YAML:1.0\n---\nsvm:\n   format: 3\n   kernel:\n      type: RBF\n      gamma: 5.0e-02\n   term_criteria: { epsilon:1.0e-03 }\n   support_vectors:\n      - [ 1., 2.,\n          3. ]\n      - [ 4., 5., 6. ]\n   decision_functions:\n      -\n         rho: -1.5\n         alpha: [ -1024., 1024. ] # comment\nrange: !!opencv-matrix\n   rows: 1\n   dt: f\n";
        let root = parse(src).unwrap();
        let svm = root.get("svm").unwrap();
        assert_eq!(svm.get("format").unwrap().as_usize(), Some(3));
        assert_eq!(svm.get("kernel").unwrap().get("type"), Some(&scalar("RBF")));
        assert_eq!(
            svm.get("term_criteria")
                .unwrap()
                .get("epsilon")
                .unwrap()
                .as_f64(),
            Some(1.0e-3)
        );
        let svs = svm.get("support_vectors").unwrap().as_seq().unwrap();
        assert_eq!(svs.len(), 2);
        assert_eq!(
            svs[0],
            Node::Seq(vec![scalar("1."), scalar("2."), scalar("3.")])
        );
        assert_eq!(svs[0].as_seq().unwrap()[0].as_f64(), Some(1.0));
        let df = &svm.get("decision_functions").unwrap().as_seq().unwrap()[0];
        assert_eq!(df.get("rho").unwrap().as_f64(), Some(-1.5));
        assert_eq!(df.get("alpha").unwrap().as_seq().unwrap().len(), 2);
        let range = root.get("range").unwrap();
        assert_eq!(range.get("rows").unwrap().as_usize(), Some(1));
        assert_eq!(range.get("dt").unwrap().as_str(), Some("f"));
    }

    #[test]
    fn reports_the_line_of_a_syntax_error() {
        let e = parse("a:\n  b: [ 1, 2\n  c: 3\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        let e = parse("a: 1\n   b: 2\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        let e = parse("a: 1\nnot a key\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
    }
}
