//! A unified diff of two texts, line by line (longest common subsequence), with `context`
//! lines around each change. Texts too large for the quadratic table are shown as one
//! replacement.

/// Largest `lines(a) * lines(b)` compared line by line.
const TABLE_LIMIT: usize = 4_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Same(usize, usize),
    Del(usize),
    Ins(usize),
}

fn ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > TABLE_LIMIT {
        return (0..n).map(Op::Del).chain((0..m).map(Op::Ins)).collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            out.push(Op::Del(i));
            i += 1;
        } else {
            out.push(Op::Ins(j));
            j += 1;
        }
    }
    out
}

/// `--- a_name` / `+++ b_name` and its hunks; empty when the texts are equal.
pub fn unified(a: &str, b: &str, a_name: &str, b_name: &str, context: usize) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let ops = ops(&la, &lb);
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, Op::Same(..)))
        .map(|(k, _)| k)
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    // Group changes whose context windows touch into hunks of op indexes.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        let (s, e) = (k.saturating_sub(context), (k + context + 1).min(ops.len()));
        match hunks.last_mut() {
            Some(h) if s <= h.1 => h.1 = e,
            _ => hunks.push((s, e)),
        }
    }
    let mut out = format!("--- {a_name}\n+++ {b_name}\n");
    for (s, e) in hunks {
        let slice = &ops[s..e];
        let start_a = slice.iter().find_map(|o| match o {
            Op::Same(i, _) | Op::Del(i) => Some(*i),
            Op::Ins(_) => None,
        });
        let start_b = slice.iter().find_map(|o| match o {
            Op::Same(_, j) | Op::Ins(j) => Some(*j),
            Op::Del(_) => None,
        });
        let count_a = slice.iter().filter(|o| !matches!(o, Op::Ins(_))).count();
        let count_b = slice.iter().filter(|o| !matches!(o, Op::Del(_))).count();
        let at = |start: Option<usize>, count: usize| match (start, count) {
            (_, 0) => format!("{},0", start.unwrap_or(0)),
            (Some(x), c) => format!("{},{c}", x + 1),
            (None, c) => format!("0,{c}"),
        };
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            at(start_a, count_a),
            at(start_b, count_b)
        ));
        for o in slice {
            match o {
                Op::Same(i, _) => out.push_str(&format!(" {}\n", la[*i])),
                Op::Del(i) => out.push_str(&format!("-{}\n", la[*i])),
                Op::Ins(j) => out.push_str(&format!("+{}\n", lb[*j])),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_with_context() {
        let a = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let b = "a\nb\nC\nd\ne\nf\ng\nh\ni\n";
        let d = unified(a, b, "old", "new", 1);
        assert_eq!(
            d,
            "--- old\n+++ new\n@@ -2,3 +2,3 @@\n b\n-c\n+C\n d\n@@ -8,1 +8,2 @@\n h\n+i\n"
        );
        assert_eq!(unified(a, a, "x", "y", 3), "");
        assert_eq!(
            unified("", "x\n", "x", "y", 3),
            "--- x\n+++ y\n@@ -0,0 +1,1 @@\n+x\n"
        );
    }
}
