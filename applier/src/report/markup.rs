//! A small markup writer that escapes by construction: markup only comes from `&'static str`
//! (the renderer's own tags), and every other string, record values above all, goes through
//! [`escape`]. Records are untrusted: a host name or a log line holding `<script>` comes out
//! as text. Elements are always closed and attributes always quoted, so the output also parses
//! as XML (the tests parse it so).

use std::fmt::Write;

/// `&`, `<`, `>`, `"` and `'` as character references; control characters other than tab and
/// newline (which XML forbids) as U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' || matches!(c, '\u{fffe}' | '\u{ffff}') => {
                out.push('\u{fffd}')
            }
            c => out.push(c),
        }
    }
    out
}

/// The document being written.
#[derive(Default)]
pub struct Markup {
    buf: String,
    open: Vec<&'static str>,
}

impl Markup {
    /// Opens `<tag attrs...>`; attribute values are escaped.
    pub fn open(&mut self, tag: &'static str, attrs: &[(&'static str, &str)]) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(tag);
        for (k, v) in attrs {
            let _ = write!(self.buf, " {k}=\"{}\"", escape(v));
        }
        self.buf.push('>');
        self.open.push(tag);
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        let tag = self.open.pop().expect("an open element to close");
        let _ = write!(self.buf, "</{tag}>");
        self
    }

    /// `<tag attrs>text</tag>`.
    pub fn elem(
        &mut self,
        tag: &'static str,
        attrs: &[(&'static str, &str)],
        text: &str,
    ) -> &mut Self {
        self.open(tag, attrs).text(text).close()
    }

    /// A void element (`<meta ... />`).
    pub fn void(&mut self, tag: &'static str, attrs: &[(&'static str, &str)]) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(tag);
        for (k, v) in attrs {
            let _ = write!(self.buf, " {k}=\"{}\"", escape(v));
        }
        self.buf.push_str(" />");
        self
    }

    /// Escaped text.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.buf.push_str(&escape(s));
        self
    }

    /// The renderer's own markup (a constant: never a record's value).
    pub fn raw(&mut self, s: &'static str) -> &mut Self {
        self.buf.push_str(s);
        self
    }

    /// The document; every element must be closed.
    pub fn finish(self) -> String {
        assert!(self.open.is_empty(), "unclosed elements: {:?}", self.open);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_text_and_markup_is_balanced() {
        let mut m = Markup::default();
        m.open("p", &[("title", "\"><script>x</script>")])
            .text("<script>alert('x')</script> & \u{1}")
            .close();
        let s = m.finish();
        assert_eq!(
            s,
            "<p title=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; \u{fffd}</p>"
        );
    }

    #[test]
    #[should_panic(expected = "unclosed")]
    fn an_unclosed_element_is_a_bug() {
        let mut m = Markup::default();
        m.open("div", &[]);
        m.finish();
    }
}
