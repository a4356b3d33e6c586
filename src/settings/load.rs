//! Loading the layers, and tracing each key back to the layer it came from.

use super::*;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// [`Settings::default`].
    Defaults,
    /// A TOML file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => f.write_str("built-in defaults"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `mqtt.port`.
    pub key: String,
    /// The layer that set it.
    pub origin: Origin,
    /// What is wrong, for an operator.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` in {}: {}", self.key, self.origin, self.message)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `--config` or `$SCRIPTD_CONFIG_DIR` names a directory that does not exist.
    #[error("configuration directory {} does not exist", .0.display())]
    MissingDir(PathBuf),
    /// A file is not valid TOML (or cannot be read).
    #[error("{origin}: {message}")]
    Syntax {
        /// The file.
        origin: Origin,
        /// Parser message, on one line.
        message: String,
    },
    /// Keys with unknown names, wrong types or out-of-range values.
    #[error("{}", join_problems(.0))]
    Invalid(Vec<Problem>),
}

pub(super) fn join_problems(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl SettingsError {
    /// One line per problem, for `check-config` and the start-up error.
    pub fn lines(&self) -> Vec<String> {
        match self {
            SettingsError::Invalid(ps) => ps.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// What [`Settings::load`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    /// The resolved configuration directory.
    pub dir: PathBuf,
    /// The files that existed and were read, in layer order.
    pub files: Vec<PathBuf>,
    /// The `SCRIPTD__*` environment variables that were applied, sorted.
    pub env_vars: Vec<String>,
}

/// Resolves the configuration directory (CONTRACT §2): `cli`, else `$SCRIPTD_CONFIG_DIR`,
/// else `./config` when it is a directory, else `/etc/scriptd`. A directory named
/// explicitly (by `cli` or the variable) must exist.
pub fn resolve_config_dir(cli: Option<&Path>) -> Result<PathBuf, SettingsError> {
    let env_dir = std::env::var_os(CONFIG_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    resolve_config_dir_with(cli, env_dir, Path::new("config"))
}

/// [`resolve_config_dir`] with the environment variable's value and `./config` passed in.
pub fn resolve_config_dir_with(
    cli: Option<&Path>,
    env_dir: Option<PathBuf>,
    local: &Path,
) -> Result<PathBuf, SettingsError> {
    if let Some(dir) = cli.map(Path::to_path_buf).or(env_dir) {
        return if dir.is_dir() { Ok(dir) } else { Err(SettingsError::MissingDir(dir)) };
    }
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    Ok(PathBuf::from(SYSTEM_CONFIG_DIR))
}

/// The `SCRIPTD__*` variables of this process (names compared case-insensitively, as the
/// `config` crate does). Variables whose value is not Unicode are skipped.
pub fn process_env() -> Vec<(String, String)> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.to_lowercase().starts_with(&prefix))
        .collect()
}

/// One layer, loaded on its own so a key can be traced back to it.
pub(super) struct Layer {
    pub(super) origin_of: Box<dyn Fn(&str) -> Origin>,
    pub(super) config: Config,
    /// Dotted key -> value, leaves and tables alike.
    pub(super) keys: BTreeMap<String, ValueKind>,
}

impl Layer {
    pub(super) fn new(
        config: Config,
        origin_of: Box<dyn Fn(&str) -> Origin>,
    ) -> Result<Self, ConfigError> {
        let mut keys = BTreeMap::new();
        flatten_config(&config.collect()?, "", &mut keys);
        Ok(Self { origin_of, config, keys })
    }
}

pub(super) fn flatten_config(
    table: &config::Map<String, Value>,
    prefix: &str,
    out: &mut BTreeMap<String, ValueKind>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let ValueKind::Table(t) = &v.kind {
            flatten_config(t, &key, out);
        }
        out.insert(key, v.kind.clone());
    }
}

/// Turns the `config` crate's multi-line TOML error into one line.
pub(super) fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}: {last}"),
        (Some(first), _) => (*first).to_string(),
        _ => message.to_string(),
    }
}

pub(super) fn config_error_message(e: &ConfigError) -> String {
    match e {
        ConfigError::Type { unexpected, expected, .. } => {
            let expected = match *expected {
                "an unsigned 16 bit integer" => "an integer 0–65535",
                "an unsigned 32 bit integer" => "an integer 0–4294967295",
                "an unsigned 64 bit or less integer" => "an integer ≥ 0",
                other => other,
            };
            format!("expected {expected}, found {unexpected}")
        }
        ConfigError::At { error, .. } => config_error_message(error),
        ConfigError::FileParse { cause, .. } => one_line(&cause.to_string()),
        other => one_line(&other.to_string()),
    }
}

pub(super) fn config_error_key(e: &ConfigError) -> Option<String> {
    match e {
        ConfigError::Type { key, .. } | ConfigError::At { key, .. } => key.clone(),
        ConfigError::NotFound(key) => Some(key.clone()),
        _ => None,
    }
}

/// The known keys: dotted path -> true for a section, false for a value.
pub(super) fn schema() -> BTreeMap<String, bool> {
    fn walk(v: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, bool>) {
        if let serde_json::Value::Object(map) = v {
            for (k, child) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.insert(key.clone(), child.is_object());
                walk(child, &key, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(Settings::default()) {
        walk(&v, "", &mut out);
    }
    out
}

pub(super) fn parent_of(key: &str) -> &str {
    key.rsplit_once('.').map_or("", |(p, _)| p)
}

/// Unknown keys and tables where values belong (or the reverse), in one layer.
pub(super) fn shape_problems(layer: &Layer, schema: &BTreeMap<String, bool>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (key, kind) in &layer.keys {
        let parent = parent_of(key);
        // Report only the outermost unknown or misshapen key.
        if !parent.is_empty() && schema.get(parent) != Some(&true) {
            continue;
        }
        let is_table = matches!(kind, ValueKind::Table(_));
        let message = match schema.get(key) {
            None => {
                let siblings: Vec<&str> = schema
                    .keys()
                    .filter(|k| parent_of(k) == parent)
                    .map(|k| k.rsplit('.').next().unwrap_or(k))
                    .collect();
                let section =
                    if parent.is_empty() { "top level".to_string() } else { format!("[{parent}]") };
                format!("unknown key (known keys at {section}: {})", siblings.join(", "))
            }
            Some(true) if !is_table => format!("expected a table [{key}], found a value"),
            Some(false) if is_table => "expected a value, found a table".to_string(),
            _ => continue,
        };
        problems.push(Problem { key: key.clone(), origin: (layer.origin_of)(key), message });
    }
    problems
}

/// The layer that set `key` last (or, for a section, any key below it).
pub(super) fn origin_of(layers: &[Layer], key: &str) -> Origin {
    let below = format!("{key}.");
    layers
        .iter()
        .rev()
        .find(|l| l.keys.contains_key(key) || l.keys.keys().any(|k| k.starts_with(&below)))
        .map_or(Origin::Defaults, |l| (l.origin_of)(key))
}

impl Settings {
    /// Resolves the directory ([`resolve_config_dir`]) and loads the layers with this
    /// process's environment.
    pub fn load(cli_dir: Option<&Path>) -> Result<(Settings, ConfigSources), SettingsError> {
        let dir = resolve_config_dir(cli_dir)?;
        Self::load_from(&dir, process_env())
    }

    /// Loads `dir/default.toml`, `dir/local.toml` and the given `SCRIPTD__*` variables over
    /// the built-in defaults, then validates. Tests pass their own `env`.
    pub fn load_from(
        dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Settings, ConfigSources), SettingsError> {
        let schema = schema();
        let mut layers = Vec::new();
        let defaults = Config::try_from(&Settings::default())
            .and_then(|c| Layer::new(c, Box::new(|_| Origin::Defaults)))
            .map_err(|e| SettingsError::Syntax {
                origin: Origin::Defaults,
                message: config_error_message(&e),
            })?;
        layers.push(defaults);

        let mut files = Vec::new();
        for name in ["default.toml", "local.toml"] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let syntax = |message: String| SettingsError::Syntax {
                origin: Origin::File(path.clone()),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| syntax(e.to_string()))?;
            let built = Config::builder()
                .add_source(File::from_str(&text, FileFormat::Toml))
                .build()
                .map_err(|e| syntax(config_error_message(&e)))?;
            let origin_path = path.clone();
            let layer = Layer::new(built, Box::new(move |_| Origin::File(origin_path.clone())))
                .map_err(|e| syntax(config_error_message(&e)))?;
            layers.push(layer);
            files.push(path);
        }

        let env: HashMap<String, String> = env.into_iter().collect();
        let mut env_vars: Vec<String> = env.keys().cloned().collect();
        env_vars.sort();
        if !env.is_empty() {
            // Key (`mqtt.port`) -> the variable's real name, for messages.
            let prefix_len = ENV_PREFIX.len() + ENV_SEPARATOR.len();
            let names: HashMap<String, String> = env
                .keys()
                .filter(|k| k.len() > prefix_len)
                .map(|k| (k[prefix_len..].to_lowercase().replace(ENV_SEPARATOR, "."), k.clone()))
                .collect();
            let built = Config::builder()
                .add_source(environment(env))
                .build()
                .and_then(|c| {
                    Layer::new(
                        c,
                        Box::new(move |key| {
                            Origin::Env(names.get(key).cloned().unwrap_or_else(|| {
                                format!(
                                    "{ENV_PREFIX}{ENV_SEPARATOR}{}",
                                    key.to_uppercase().replace('.', ENV_SEPARATOR)
                                )
                            }))
                        }),
                    )
                })
                .map_err(|e| SettingsError::Syntax {
                    origin: Origin::Env(format!("{ENV_PREFIX}{ENV_SEPARATOR}*")),
                    message: config_error_message(&e),
                })?;
            layers.push(built);
        }

        let problems: Vec<Problem> =
            layers.iter().flat_map(|l| shape_problems(l, &schema)).collect();
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }

        let mut builder = Config::builder();
        for layer in &layers {
            builder = builder.add_source(layer.config.clone());
        }
        let merged = builder.build().map_err(|e| SettingsError::Syntax {
            origin: Origin::Defaults,
            message: config_error_message(&e),
        })?;
        let settings: Settings = merged.try_deserialize().map_err(|e| {
            let key = config_error_key(&e).unwrap_or_default();
            let origin = origin_of(&layers, &key);
            SettingsError::Invalid(vec![Problem { key, origin, message: config_error_message(&e) }])
        })?;

        let mut settings = settings;
        let mut found = settings.validate();
        let password = settings.mqtt.read_password_file().unwrap_or_else(|message| {
            found.push(("mqtt.password_file".into(), message));
            None
        });
        let problems: Vec<Problem> = found
            .into_iter()
            .map(|(key, message)| Problem { origin: origin_of(&layers, &key), key, message })
            .collect();
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
        if password.is_some() {
            settings.mqtt.password = password;
        }
        Ok((settings, ConfigSources { dir: dir.to_path_buf(), files, env_vars }))
    }
}

fn environment(env: HashMap<String, String>) -> Environment {
    // Values stay strings (`try_parsing(false)`): serde converts them to the field's type,
    // and a password like `007` keeps its leading zeros.
    Environment::with_prefix(ENV_PREFIX)
        .separator(ENV_SEPARATOR)
        .source(Some(env.into_iter().collect()))
}
