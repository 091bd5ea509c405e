//! Shared plumbing for the line-oriented readers: whole-file reads with clear
//! errors and a line walker that reports progress by bytes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::EvalError;

/// Read a whole text file; invalid UTF-8 is reported with its line number.
pub(crate) fn read_text(path: &Path) -> Result<String, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message:
                "not valid UTF-8; qrels and run files are plain text (re-export the file as UTF-8)"
                    .to_string(),
        }
    })
}

/// Call `f(line_number, fields)` for every non-blank line of `text`, splitting
/// fields on ASCII whitespace into `fields` (reused, so no per-line
/// allocation). A progress bar over the bytes is shown for large inputs.
pub(crate) fn for_each_line<'t>(
    text: &'t str,
    what: &str,
    mut f: impl FnMut(usize, &[&'t str]) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    const PROGRESS_EVERY: usize = 1 << 16;
    let bar = (text.len() > 1 << 24).then(|| tandem_io::progress(text.len() as u64, what));
    let mut fields: Vec<&'t str> = Vec::with_capacity(8);
    let mut offset = 0usize;
    for (i, line) in text.split('\n').enumerate() {
        if let Some(bar) = bar.as_ref().filter(|_| i % PROGRESS_EVERY == 0) {
            bar.set_position(offset as u64);
        }
        offset += line.len() + 1;
        fields.clear();
        fields.extend(line.split_ascii_whitespace());
        if !fields.is_empty() {
            f(i + 1, &fields)?;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// The value stored under `key`, inserted as default first when absent; the
/// key is only allocated when it is new.
pub(crate) fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("key inserted just above")
}
