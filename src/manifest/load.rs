//! Loading manifests: files, YAML documents, the schema; then [`super::validate`]. Every
//! problem is reported as `file:line:column: message`, and a file with any problem yields
//! no config at all: a half-valid set of fleets is never returned.

use super::locate::locate;
use super::validate::{self, Doc};
use super::{ControllerSpec, FleetSpec, SimulationSpec, TrafficSpec};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// One thing wrong with a manifest, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} problem(s) in manifests:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error(
        "no fleet manifests found in {0}: add a *.yaml file with a fleet (see manifests/ and examples/)"
    )]
    Empty(String),
}

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub controller: ControllerSpec,
    pub fleets: Vec<FleetSpec>,
    /// Hash of every source text, to notice when files change.
    pub fingerprint: u64,
}

impl Config {
    pub fn fleet(&self, name: &str) -> Option<&FleetSpec> {
        self.fleets.iter().find(|f| f.name == name)
    }

    /// Capacity units `instance` counts for: its type's `weighted_capacity` in its
    /// fleet's launch spec; 1 for a type without one, or a fleet not in this config.
    pub fn weight_of(&self, instance: &crate::cloud::Instance) -> u32 {
        self.fleet(&instance.fleet)
            .map_or(1, |f| f.launch.weight_of(&instance.instance_type))
    }
}

/// Files named by `paths`: files as given, and every `*.yaml`/`*.yml` under a directory,
/// its subdirectories included (hidden ones, starting with `.`, skipped), sorted by path
/// for a stable order. `validate` and `run` read the same list.
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| ManifestError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            collect_yaml(p, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Every `*.yaml`/`*.yml` file under `dir`, recursively, skipping hidden entries.
fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| ManifestError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            )
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Load and validate everything under `paths`.
pub fn load_paths(paths: &[PathBuf]) -> Result<Config, ManifestError> {
    let files = manifest_files(paths)?;
    let mut sources = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| ManifestError::Io {
            path: f.clone(),
            source,
        })?;
        sources.push((
            f.display().to_string(),
            text,
            f.parent().map(Path::to_path_buf),
        ));
    }
    let described = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    load_sources(&sources, &described)
}

/// Load and validate one manifest text (`name` is used in messages).
pub fn load_str(name: &str, text: &str) -> Result<Config, ManifestError> {
    load_sources(&[(name.to_string(), text.to_string(), None)], name)
}

/// A parsed fleet with its file, its document's text and that document's line offset.
/// A parsed document: its spec, file, text, and the file's lines before it.
type Parsed<T> = (T, String, String, usize);
type ParsedFleet = Parsed<FleetSpec>;

fn load_sources(
    sources: &[(String, String, Option<PathBuf>)],
    described: &str,
) -> Result<Config, ManifestError> {
    let mut problems = Vec::new();
    let mut fleets: Vec<ParsedFleet> = Vec::new();
    let mut controllers: Vec<Parsed<ControllerSpec>> = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (file, text, dir) in sources {
        file.hash(&mut hasher);
        text.hash(&mut hasher);
        parse_file(file, text, &mut fleets, &mut controllers, &mut problems);
        // Resolve relative trace paths against the manifest's folder.
        if let Some(dir) = dir {
            for (f, _, _, _) in fleets.iter_mut().filter(|(_, src, _, _)| src == file) {
                if let Some(SimulationSpec {
                    traffic: TrafficSpec::Trace(t),
                    ..
                }) = f.simulation.as_mut()
                {
                    if t.path.is_relative() {
                        t.path = dir.join(&t.path);
                    }
                }
            }
        }
    }
    let fleet_docs: Vec<(&FleetSpec, Doc)> = fleets
        .iter()
        .map(|(f, file, text, offset)| {
            (
                f,
                Doc {
                    file,
                    text,
                    offset: *offset,
                },
            )
        })
        .collect();
    let controller_docs: Vec<(&ControllerSpec, Doc)> = controllers
        .iter()
        .map(|(c, file, text, offset)| {
            (
                c,
                Doc {
                    file,
                    text,
                    offset: *offset,
                },
            )
        })
        .collect();
    for (f, d) in &fleet_docs {
        validate::fleet(f, *d, &mut problems);
    }
    for (c, d) in &controller_docs {
        validate::controller(c, *d, &mut problems);
    }
    validate::set(&fleet_docs, &controller_docs, &mut problems);
    if !problems.is_empty() {
        return Err(ManifestError::Invalid(problems));
    }
    if fleets.is_empty() {
        return Err(ManifestError::Empty(described.to_string()));
    }
    Ok(Config {
        controller: controllers
            .into_iter()
            .next()
            .map(|(c, _, _, _)| c)
            .unwrap_or_default(),
        fleets: fleets.into_iter().map(|(f, _, _, _)| f).collect(),
        fingerprint: hasher.finish(),
    })
}

fn yaml_problem(file: &str, err: &serde_yaml::Error, hint_offset_line: usize) -> Problem {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((hint_offset_line, 1));
    let mut message = err.to_string();
    // serde_yaml appends " at line L column C"; we already lead with the location.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if message.contains("unknown field") {
        message.push_str(" (check the spelling; see docs/manifest-reference.md for every field)");
    }
    if message.contains("missing field") {
        message.push_str(" (add it; see manifests/ for complete fleets)");
    }
    Problem {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// Split a file into documents, remembering each one's text (for locating keys).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                docs.push((start_line, std::mem::take(&mut current)));
            }
            current.clear();
            start_line = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((start_line, current));
    }
    docs
}

fn parse_file(
    file: &str,
    text: &str,
    fleets: &mut Vec<ParsedFleet>,
    controllers: &mut Vec<Parsed<ControllerSpec>>,
    problems: &mut Vec<Problem>,
) {
    for (start_line, doc) in documents(text) {
        let shift = |mut p: Problem| {
            p.line += start_line - 1;
            p
        };
        let value: serde_yaml::Value = match serde_yaml::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                problems.push(shift(yaml_problem(file, &e, 1)));
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("Fleet")
            .to_string();
        match kind.as_str() {
            "Fleet" => match serde_yaml::from_str::<FleetSpec>(&doc) {
                Ok(f) => fleets.push((f, file.to_string(), doc.clone(), start_line - 1)),
                Err(e) => problems.push(shift(yaml_problem(file, &e, 1))),
            },
            "Controller" => match serde_yaml::from_str::<ControllerSpec>(&doc) {
                Ok(c) => controllers.push((c, file.to_string(), doc.clone(), start_line - 1)),
                Err(e) => problems.push(shift(yaml_problem(file, &e, 1))),
            },
            other => {
                let (line, column) = locate(&doc, &["kind"]);
                problems.push(shift(Problem {
                    file: file.to_string(),
                    line,
                    column,
                    message: format!(
                        "unknown kind '{other}': a document is `kind: Fleet` (the default) or `kind: Controller`"
                    ),
                }));
            }
        }
    }
}
