//! `cargo xtask tidy`: the house rules, checked over the whole workspace.
//!
//! - every Rust file opens with a `//!` line saying what it is for;
//! - a file under `broker/src` or `client/src` stays within [`LINE_BUDGET`] lines,
//!   unless its opening doc says why it is larger (a line starting `//! Size:`), or it
//!   is one of the [`OVER_BUDGET`] files waiting for their split;
//! - no `unsafe` outside `broker/src/pacing.rs` (the workspace denies `unsafe_code`
//!   as well; this also catches an `#[allow]` slipped in elsewhere);
//! - no `todo!`, `unimplemented!` or `dbg!` left behind;
//! - no import circle between the modules of one crate, counted from `use` statements
//!   and `crate::`/`super::`/`self::` paths (see [`imports`]). Circles known today
//!   are listed in [`KNOWN_CIRCLES`] so that the check passes while they wait for
//!   their fix; a new module joining one, or a new circle, fails.
//!
//! Comments and string literals are blanked before any code rule looks at a file, so
//! prose about `unsafe` or a test that spells `todo!` in a string do not count.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

/// Lines a file under `broker/src` or `client/src` may have without saying why.
pub const LINE_BUDGET: usize = 800;

/// Files over the budget today, each waiting for the split issue 19 schedules once
/// the feature work on them has landed. Remove a line when its file is split.
const OVER_BUDGET: &[&str] = &[];

/// The one file allowed an `unsafe` block: `setsockopt(SO_RCVLOWAT)`.
const UNSAFE_ALLOWED: &[&str] = &["broker/src/pacing.rs"];

/// Import circles known today, per crate directory, as the modules in them. A circle
/// found by the check passes when all its modules lie within one of these sets, so a
/// module joining one, or a new circle, fails.
const KNOWN_CIRCLES: &[(&str, &[&str])] = &[];

/// The crates of the workspace, and where their Rust files are.
const CRATES: &[&str] = &[
    "bench",
    "broker",
    "client",
    "conformance",
    "frames",
    "fuzz",
    "xtask",
];
const FILE_DIRS: &[&str] = &["src", "tests", "examples", "benches"];
/// Rust files outside the usual folders that the rules cover too.
const EXTRA_DIRS: &[&str] = &["fuzz/libfuzzer/fuzz_targets", "fuzz/record"];

pub fn run(args: Vec<String>) -> ExitCode {
    let verbose = args.iter().any(|a| a == "--verbose" || a == "-v");
    let root = workspace_root();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for krate in CRATES {
        for dir in FILE_DIRS {
            rust_files(&root.join(krate).join(dir), &mut files);
        }
    }
    for dir in EXTRA_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    for file in &files {
        let rel = relative(&root, file);
        let text = match fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{rel}: cannot read: {e}"));
                continue;
            }
        };
        check_file(&rel, &text, &mut problems);
    }
    for krate in CRATES {
        let src = root.join(krate).join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = imports::crate_graph(&src);
        let circles = imports::circles(&graph);
        if verbose || !circles.is_empty() {
            println!(
                "tidy: {krate}: {} modules, {} import circle(s){}",
                graph.len(),
                circles.len(),
                circles
                    .iter()
                    .map(|c| format!("\n  {}", c.join(" ↔ ")))
                    .collect::<String>()
            );
        }
        let known: Vec<&[&str]> = KNOWN_CIRCLES
            .iter()
            .filter(|(k, _)| k == krate)
            .map(|(_, m)| *m)
            .collect();
        for circle in circles {
            let allowed = known
                .iter()
                .any(|set| circle.iter().all(|m| set.contains(&m.as_str())));
            if !allowed {
                problems.push(format!(
                    "{krate}/src: import circle {} (break it: move what both need into a module below them)",
                    circle.join(" ↔ ")
                ));
            }
        }
    }
    if problems.is_empty() {
        println!("tidy: {} files, all rules hold", files.len());
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        eprintln!("tidy: {} problem(s)", problems.len());
        ExitCode::FAILURE
    }
}

/// The rules that look at one file alone.
fn check_file(rel: &str, text: &str, problems: &mut Vec<String>) {
    if !text.starts_with("//!") {
        problems.push(format!(
            "{rel}: must open with a `//!` line saying what it is for"
        ));
    }
    let lines = text.lines().count();
    let budgeted = rel.starts_with("broker/src/") || rel.starts_with("client/src/");
    if budgeted && lines > LINE_BUDGET && !OVER_BUDGET.contains(&rel) && !says_why(text) {
        problems.push(format!(
            "{rel}: {lines} lines, over the budget of {LINE_BUDGET}: split it, or say why at its top (`//! Size: ...`)"
        ));
    }
    let code = blank_comments_and_strings(text);
    for (n, line) in code.lines().enumerate() {
        if has_word(line, "unsafe") && !UNSAFE_ALLOWED.contains(&rel) {
            problems.push(format!(
                "{rel}:{}: `unsafe` outside {UNSAFE_ALLOWED:?}",
                n + 1
            ));
        }
        for banned in ["todo", "unimplemented", "dbg"] {
            if macro_call(line, banned) {
                problems.push(format!("{rel}:{}: `{banned}!` left behind", n + 1));
            }
        }
    }
}

/// Whether the opening doc block has a `//! Size:` line.
fn says_why(text: &str) -> bool {
    text.lines().take_while(|l| l.starts_with("//!")).any(|l| {
        l.trim_start_matches("//!")
            .trim_start()
            .starts_with("Size:")
    })
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `word` standing alone in `line`, not inside a longer identifier.
fn has_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// `name!(`, `name![` or `name!{` as a macro call.
fn macro_call(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let rest = line[i + name.len()..].trim_start();
        !before.is_some_and(is_ident_char)
            && rest.starts_with('!')
            && rest[1..].trim_start().starts_with(['(', '[', '{'])
    })
}

/// `text` with comments and the insides of string and char literals replaced by
/// spaces, line breaks kept, so that line numbers still match.
pub fn blank_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b')
            && !chars[..i].last().is_some_and(|&p| is_ident_char(p))
            && raw_string_start(&chars[i..]).is_some()
        {
            let (prefix, hashes) = raw_string_start(&chars[i..]).unwrap_or((0, 0));
            for _ in 0..prefix {
                out.push(' ');
            }
            i += prefix;
            // Find `"` followed by `hashes` #.
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): a literal closes
            // within a few characters.
            let close = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `r"`, `r#"`, `br"`, `br#"`: the prefix's length (through the quote) and the
/// number of `#`.
fn raw_string_start(s: &[char]) -> Option<(usize, usize)> {
    let mut i = 0;
    if s.first() == Some(&'b') {
        i += 1;
    }
    if s.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let mut hashes = 0;
    while s.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    (s.get(i) == Some(&'"')).then_some((i + 1, hashes))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .to_string_lossy()
        .replace('\\', "/")
}

pub mod imports {
    //! Which module of a crate uses which: the graph of file modules that the circle
    //! rule and `cargo xtask tidy --verbose` read.
    //!
    //! A module is a file (`src/lib.rs` or `main.rs` is the root, `""`;
    //! `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`). An edge `m → n` means a `use`
    //! or a path in `m` names an item that `n` defines. Paths are resolved segment by
    //! segment through child modules and through `use` re-exports, so `crate::Thing`
    //! re-exported by `lib.rs` from `a` is an edge to `a`, and one re-exported from
    //! another crate is no edge at all. An edge into a module's own ancestor (a
    //! child using its parent's items) is kept in the graph but left out of circles:
    //! a parent declares its children, and a child reaching up is the separate
    //! "front door" question, counted by [`front_door_imports`].

    use super::blank_comments_and_strings;
    use std::{
        collections::{BTreeMap, BTreeSet},
        fs,
        path::Path,
    };

    /// Module → the modules it uses.
    pub type Graph = BTreeMap<String, BTreeSet<String>>;

    struct Module {
        /// `use` items this module makes visible under a name: name → path
        /// (absolute: starting at the crate root, or external).
        reexports: BTreeMap<String, Vec<String>>,
        /// Modules whose public names it re-exports with a glob (`pub use a::*`).
        globs: Vec<Vec<String>>,
        /// Names of the items it defines (`struct`, `fn`, ... at any depth).
        defines: BTreeSet<String>,
        /// The paths it names, each already absolute (segments from the root).
        paths: Vec<Vec<String>>,
    }

    pub fn crate_graph(src: &Path) -> Graph {
        let mut files = Vec::new();
        super::rust_files(src, &mut files);
        let mut names = BTreeMap::new();
        for file in &files {
            let rel = file.strip_prefix(src).unwrap_or(file).to_string_lossy();
            let rel = rel.trim_end_matches(".rs").replace('\\', "/");
            let module = match rel.as_str() {
                "lib" | "main" => String::new(),
                r => r.trim_end_matches("/mod").replace('/', "::"),
            };
            // A crate with both lib.rs and main.rs: the binary is a crate of its
            // own; keep the library's root.
            if module.is_empty() && rel == "main" && files.iter().any(|f| f.ends_with("lib.rs")) {
                continue;
            }
            // Files under src/bin are crates of their own, too.
            if rel.starts_with("bin/") {
                continue;
            }
            names.insert(module, file.clone());
        }
        let known: BTreeSet<String> = names.keys().cloned().collect();
        let modules: BTreeMap<String, Module> = names
            .iter()
            .map(|(m, f)| {
                let text = fs::read_to_string(f).unwrap_or_default();
                (m.clone(), parse(m, &text, &known))
            })
            .collect();
        let mut graph = Graph::new();
        for (name, module) in &modules {
            let edges = graph.entry(name.clone()).or_default();
            for path in &module.paths {
                if let Some(target) = resolve(path, &modules, &known, 0) {
                    if &target != name {
                        edges.insert(target);
                    }
                }
            }
        }
        graph
    }

    /// The strongly connected groups of two or more modules, edges into an
    /// ancestor left out; each sorted, in a stable order.
    pub fn circles(graph: &Graph) -> Vec<Vec<String>> {
        let nodes: Vec<&String> = graph.keys().collect();
        let index: BTreeMap<&String, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adj: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                graph[*n]
                    .iter()
                    .filter(|t| !is_ancestor(t, n))
                    .filter_map(|t| index.get(t).copied())
                    .collect()
            })
            .collect();
        let mut out: Vec<Vec<String>> = tarjan(&adj)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut names: Vec<String> = c.iter().map(|&i| display(nodes[i])).collect();
                names.sort();
                names
            })
            .collect();
        out.sort();
        out
    }

    /// Edges from a module up to one of its ancestors (`crate::Shared` defined in
    /// `lib.rs`, `super::Thing` defined in the parent).
    pub fn front_door_imports(graph: &Graph) -> Vec<(String, String)> {
        graph
            .iter()
            .flat_map(|(from, tos)| {
                tos.iter()
                    .filter(move |to| is_ancestor(to, from))
                    .map(move |to| (display(from), display(to)))
            })
            .collect()
    }

    fn display(m: &str) -> String {
        if m.is_empty() {
            "lib.rs".into()
        } else {
            m.into()
        }
    }

    fn is_ancestor(a: &str, of: &str) -> bool {
        a.is_empty() || of.starts_with(&format!("{a}::"))
    }

    fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
        struct St<'a> {
            adj: &'a [Vec<usize>],
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        fn visit(s: &mut St, v: usize) {
            s.index[v] = Some(s.next);
            s.low[v] = s.next;
            s.next += 1;
            s.stack.push(v);
            s.on[v] = true;
            for &w in &s.adj[v] {
                match s.index[w] {
                    None => {
                        visit(s, w);
                        s.low[v] = s.low[v].min(s.low[w]);
                    }
                    Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(s.low[v]) == s.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                s.out.push(comp);
            }
        }
        let n = adj.len();
        let mut s = St {
            adj,
            index: vec![None; n],
            low: vec![0; n],
            on: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if s.index[v].is_none() {
                visit(&mut s, v);
            }
        }
        s.out
    }

    /// Follows `path` (absolute) to the file module that defines its item.
    fn resolve(
        path: &[String],
        modules: &BTreeMap<String, Module>,
        known: &BTreeSet<String>,
        depth: usize,
    ) -> Option<String> {
        if depth > 8 || path.first().is_some_and(|s| s == "::") {
            return None;
        }
        let mut current = String::new();
        for (i, seg) in path.iter().enumerate() {
            if seg == "*" {
                return Some(current);
            }
            let child = join(&current, seg);
            if known.contains(&child) {
                current = child;
                continue;
            }
            // Not a file module: a re-export of this module, or an item it defines
            // (or an inline module of it: the same file).
            let here = modules.get(&current)?;
            if here.defines.contains(seg) {
                return Some(current);
            }
            if let Some(target) = here.reexports.get(seg) {
                let mut rest = target.clone();
                rest.extend(path[i + 1..].iter().cloned());
                return resolve(&rest, modules, known, depth + 1);
            }
            for glob in &here.globs {
                let through = modules.get(&glob.join("::"));
                if through.is_some_and(|t| t.defines.contains(seg) || t.reexports.contains_key(seg))
                {
                    let mut rest = glob.clone();
                    rest.extend(path[i..].iter().cloned());
                    return resolve(&rest, modules, known, depth + 1);
                }
            }
            return Some(current);
        }
        Some(current)
    }

    fn join(a: &str, b: &str) -> String {
        if a.is_empty() {
            b.to_owned()
        } else {
            format!("{a}::{b}")
        }
    }

    /// The paths one file names, made absolute from `module` (with inline modules
    /// taken into account for `super` and `self`).
    fn parse(module: &str, text: &str, known: &BTreeSet<String>) -> Module {
        let code = blank_comments_and_strings(text);
        let tokens = tokenize(&code);
        let mut m = Module {
            reexports: BTreeMap::new(),
            globs: Vec::new(),
            defines: BTreeSet::new(),
            paths: Vec::new(),
        };
        for w in tokens.windows(2) {
            if matches!(
                w[0].as_str(),
                "struct" | "enum" | "fn" | "trait" | "type" | "const" | "static" | "union" | "mod"
            ) && is_ident(&w[1])
            {
                m.defines.insert(w[1].clone());
            }
        }
        let base: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").map(str::to_owned).collect()
        };
        // The inline module stack: (name, brace depth at which it closes).
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        while i < tokens.len() {
            let t = tokens[i].as_str();
            let here: Vec<String> = base
                .iter()
                .cloned()
                .chain(inline.iter().map(|(n, _)| n.clone()))
                .collect();
            match t {
                "{" => depth += 1,
                "}" => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                "mod" if tokens.get(i + 2).is_some_and(|t| t == "{") => {
                    inline.push((tokens[i + 1].clone(), depth));
                }
                "use" => {
                    let end = (i..tokens.len())
                        .find(|&k| tokens[k] == ";")
                        .unwrap_or(tokens.len());
                    let public = i > 0 && (tokens[i - 1] == "pub" || tokens[i - 1] == ")");
                    let mut leaves = Vec::new();
                    use_tree(&tokens[i + 1..end], Vec::new(), &mut leaves);
                    for (path, alias) in leaves {
                        let abs = absolute(&path, &here, known, true);
                        // What a `use` at file level brings in scope is what a path
                        // through this module reaches, `pub` or not (a child sees it).
                        if inline.is_empty() {
                            let name = alias.or_else(|| match path.last().map(String::as_str) {
                                Some("self") => path.iter().rev().nth(1).cloned(),
                                Some("*") | None => None,
                                Some(last) => Some(last.to_owned()),
                            });
                            match (&abs, name) {
                                (Some(abs), _) if path.last().is_some_and(|l| l == "*") => {
                                    let mut module = abs.clone();
                                    module.pop();
                                    if public {
                                        m.globs.push(module);
                                    }
                                }
                                (Some(abs), Some(name)) => {
                                    m.reexports.insert(name, abs.clone());
                                }
                                // From another crate: a path through it leaves this one.
                                (None, Some(name)) => {
                                    m.reexports.insert(name, vec!["::".into()]);
                                }
                                _ => {}
                            }
                        }
                        if let Some(abs) = abs {
                            m.paths.push(abs);
                        }
                    }
                    i = end;
                    continue;
                }
                "crate" | "super" | "self" if tokens.get(i + 1).is_some_and(|t| t == "::") => {
                    let prev_colons = i > 0 && tokens[i - 1] == "::";
                    if !prev_colons {
                        let mut path = vec![t.to_owned()];
                        let mut k = i + 1;
                        while tokens.get(k).is_some_and(|t| t == "::")
                            && tokens.get(k + 1).is_some_and(|t| is_ident(t))
                        {
                            path.push(tokens[k + 1].clone());
                            k += 2;
                        }
                        if let Some(abs) = absolute(&path, &here, known, false) {
                            m.paths.push(abs);
                        }
                        i = k;
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        m
    }

    /// A path from a `use` or an expression, made absolute. `in_use`: a bare first
    /// segment may name a child module (2018 paths); otherwise it is external.
    fn absolute(
        path: &[String],
        here: &[String],
        known: &BTreeSet<String>,
        in_use: bool,
    ) -> Option<Vec<String>> {
        let first = path.first()?;
        let mut abs: Vec<String>;
        let mut rest = &path[1..];
        match first.as_str() {
            "crate" => abs = Vec::new(),
            "self" => abs = here.to_vec(),
            "super" => {
                abs = here.to_vec();
                abs.pop();
                while rest.first().is_some_and(|s| s == "super") {
                    abs.pop();
                    rest = &rest[1..];
                }
            }
            "::" => return None,
            name if in_use => {
                let mut child = here.to_vec();
                child.push(name.to_owned());
                if known.contains(&child.join("::")) {
                    abs = child;
                } else {
                    // An external crate, or an item of this module in scope.
                    return None;
                }
            }
            _ => return None,
        }
        abs.extend(rest.iter().cloned());
        Some(abs)
    }

    /// The leaves of a use tree: (path, `as` alias).
    fn use_tree(
        tokens: &[String],
        prefix: Vec<String>,
        out: &mut Vec<(Vec<String>, Option<String>)>,
    ) {
        let mut path = prefix;
        let mut i = 0;
        if tokens.first().is_some_and(|t| t == "::") {
            // `use ::std::…`: external.
            return;
        }
        while i < tokens.len() {
            let t = tokens[i].as_str();
            match t {
                "::" => i += 1,
                "{" => {
                    // Split the group at top-level commas.
                    let mut depth = 0;
                    let mut start = i + 1;
                    let mut k = i + 1;
                    while k < tokens.len() {
                        match tokens[k].as_str() {
                            "{" => depth += 1,
                            "}" if depth == 0 => {
                                if start < k {
                                    use_tree(&tokens[start..k], path.clone(), out);
                                }
                                return;
                            }
                            "}" => depth -= 1,
                            "," if depth == 0 => {
                                if start < k {
                                    use_tree(&tokens[start..k], path.clone(), out);
                                }
                                start = k + 1;
                            }
                            _ => {}
                        }
                        k += 1;
                    }
                    return;
                }
                "as" => {
                    out.push((path, tokens.get(i + 1).cloned()));
                    return;
                }
                _ => {
                    path.push(t.to_owned());
                    i += 1;
                }
            }
        }
        if !path.is_empty() {
            out.push((path, None));
        }
    }

    fn is_ident(t: &str) -> bool {
        t.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    }

    /// Identifiers, `::`, and single punctuation characters.
    fn tokenize(code: &str) -> Vec<String> {
        let mut out = Vec::new();
        let chars: Vec<char> = code.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c.is_alphanumeric() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(chars[start..i].iter().collect());
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                out.push("::".into());
                i += 2;
            } else {
                out.push(c.to_string());
                i += 1;
            }
        }
        out
    }
}

/// `cargo xtask tidy --graph`: every crate's module graph, circles and front-door
/// imports, for the record of a restructuring.
pub fn report() -> ExitCode {
    let root = workspace_root();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = imports::crate_graph(&src);
        let circles = imports::circles(&graph);
        let front = imports::front_door_imports(&graph);
        println!(
            "{krate}: {} modules, {} circle(s), {} import(s) of an ancestor",
            graph.len(),
            circles.len(),
            front.len()
        );
        for c in &circles {
            println!("  circle: {}", c.join(" ↔ "));
        }
        for (from, to) in &front {
            println!("  up: {from} → {to}");
        }
        let mut edges: BTreeMap<&String, &BTreeSet<String>> = BTreeMap::new();
        for (m, tos) in &graph {
            edges.insert(m, tos);
        }
        for (m, tos) in edges {
            if !tos.is_empty() {
                let name = if m.is_empty() { "lib.rs" } else { m.as_str() };
                println!(
                    "  {name} → {}",
                    tos.iter()
                        .map(|t| if t.is_empty() { "lib.rs" } else { t.as_str() })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_strings_do_not_count() {
        let code = blank_comments_and_strings(
            "let a = \"unsafe todo!()\"; // dbg!(x)\n/* unsafe */ let c = '\"'; let r = r#\"todo!()\"#;\nunsafe {}",
        );
        assert!(!code.lines().next().unwrap().contains("unsafe"));
        assert!(!macro_call(code.lines().next().unwrap(), "todo"));
        assert!(!code.contains("todo"));
        assert!(has_word(code.lines().nth(2).unwrap(), "unsafe"));
        assert_eq!(code.lines().count(), 3);
    }

    #[test]
    fn macro_calls_are_found_and_names_inside_words_are_not() {
        assert!(macro_call("    dbg!(x);", "dbg"));
        assert!(macro_call("todo! ()", "todo"));
        assert!(!macro_call("let todo_list = 1;", "todo"));
        assert!(!macro_call("mytodo!(x)", "todo"));
        assert!(!has_word("unsafe_code", "unsafe"));
    }

    #[test]
    fn a_circle_between_two_files_is_found_and_a_parent_child_pair_is_not() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::write(
            dir.join("lib.rs"),
            "//! r\nmod a; mod b; mod c;\npub use b::Thing;\n",
        )
        .unwrap();
        fs::write(
            dir.join("a.rs"),
            "//! a\nmod inner;\nuse crate::{b::{self, Other}};\n",
        )
        .unwrap();
        fs::write(
            dir.join("a/inner.rs"),
            "//! i\nuse super::Z;\nuse crate::c::X as Y;\n",
        )
        .unwrap();
        fs::write(
            dir.join("b.rs"),
            "//! b\npub struct Thing; fn f() { crate::a::go(); }\n",
        )
        .unwrap();
        fs::write(
            dir.join("c.rs"),
            "//! c\nuse crate::Thing;\n#[cfg(test)] mod tests { use super::*; }\n",
        )
        .unwrap();
        let graph = imports::crate_graph(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            graph["c"].iter().collect::<Vec<_>>(),
            ["b"],
            "crate::Thing is b's, through lib.rs's re-export"
        );
        assert_eq!(graph["a::inner"].iter().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(
            imports::circles(&graph),
            vec![vec!["a".to_string(), "b".to_string()]]
        );
        assert_eq!(
            imports::front_door_imports(&graph),
            vec![("a::inner".to_string(), "a".to_string())]
        );
    }
}
