//! The rustc command line, as cargo writes it, read into a [`Call`] — or refused.
//!
//! Three answers, as in sccache: a unit the model can thunk ([`Parsed::Unit`]), a call that is not a
//! compilation at all ([`Parsed::Probe`]: `-vV`, `--print`, source on stdin), and a compilation the model
//! does not fully understand ([`Parsed::PassThrough`], with a short reason the build summary counts).
//! Any flag not listed here is a pass-through: an unknown flag can never produce a wrong build.

use std::path::PathBuf;

/// What a rustc call is.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A compilation of one crate that the model understands completely.
    Unit(Box<Call>),
    /// Not a compilation: a version query, a `--print`, a build script's probe on stdin.
    Probe,
    /// A compilation the model does not understand; rustc runs for real.
    PassThrough(&'static str),
}

/// What rustc is asked to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Emit {
    /// `NAME-EXTRA.d`.
    DepInfo,
    /// `libNAME-EXTRA.rmeta`.
    Metadata,
    /// The crate type's linked output.
    Link,
}

/// A compilation of one crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Every argument, in order, minus those the model drops (`-C incremental=…`).
    pub args: Vec<String>,
    /// `--crate-name`.
    pub crate_name: String,
    /// `--crate-type` (each), or `bin` for `--test`.
    pub crate_types: Vec<String>,
    /// `--emit`, sorted.
    pub emits: Vec<Emit>,
    /// `--out-dir`, as written.
    pub out_dir: PathBuf,
    /// `-C extra-filename`.
    pub extra_filename: String,
    /// The source file, as written.
    pub input: PathBuf,
    /// `--extern NAME=PATH`: the paths, as written.
    pub externs: Vec<PathBuf>,
    /// `-L KIND=PATH` with kind `native` or `all`: native library search paths, as written.
    pub native_paths: Vec<PathBuf>,
    /// `--target`, if given.
    pub target: Option<String>,
    /// Whether cargo asked for `--json=…artifacts…` notifications.
    pub artifact_notifications: bool,
}

impl Call {
    /// Whether this compiles a build script (`build_script_*`), which cargo runs next.
    pub fn is_build_script(&self) -> bool {
        self.crate_name.starts_with("build_script_")
    }

    /// Whether the output is linked (needs the rlibs of every dependency, not just their metadata).
    pub fn links(&self) -> bool {
        self.emits.contains(&Emit::Link) && self.crate_types.iter().any(|t| t != "lib" && t != "rlib")
    }

    /// The files rustc writes, with what each is, in the order rustc reports them.
    pub fn outputs(&self) -> Vec<(PathBuf, Emit)> {
        let stem = format!("{}{}", self.crate_name, self.extra_filename);
        let mut outputs = Vec::new();
        for emit in &self.emits {
            match emit {
                Emit::DepInfo => outputs.push((self.out_dir.join(format!("{stem}.d")), Emit::DepInfo)),
                Emit::Metadata => outputs.push((self.out_dir.join(format!("lib{stem}.rmeta")), Emit::Metadata)),
                Emit::Link => {
                    for crate_type in &self.crate_types {
                        let name = match crate_type.as_str() {
                            "bin" => stem.clone(),
                            "lib" | "rlib" => format!("lib{stem}.rlib"),
                            "staticlib" => format!("lib{stem}.a"),
                            _ => format!("lib{stem}.so"),
                        };
                        outputs.push((self.out_dir.join(name), Emit::Link));
                    }
                }
            }
        }
        outputs
    }
}

/// `-C` options whose effect is confined to the outputs the model already knows about.
const KNOWN_CODEGEN: &[&str] = &[
    "codegen-units",
    "debug-assertions",
    "debuginfo",
    "embed-bitcode",
    "extra-filename",
    "force-frame-pointers",
    "force-unwind-tables",
    "lto",
    "metadata",
    "opt-level",
    "overflow-checks",
    "panic",
    "prefer-dynamic",
    "relocation-model",
    "rpath",
    "strip",
    "symbol-mangling-version",
    "target-cpu",
    "target-feature",
    "code-model",
    "link-dead-code",
    "no-redzone",
    "soft-float",
    "llvm-args",
];

/// Flags that take a value and need no modelling beyond being part of the thunk.
const PLAIN_VALUE_FLAGS: &[&str] = &[
    "--edition",
    "--cfg",
    "--check-cfg",
    "--cap-lints",
    "--error-format",
    "--diagnostic-width",
    "--color",
    "-A",
    "-W",
    "-D",
    "-F",
    "--allow",
    "--warn",
    "--deny",
    "--forbid",
    "--force-warn",
    "--crate-attr",
    "-l",
];

/// Reads rustc's arguments (without the program name).
pub fn parse(args: &[String]) -> Parsed {
    let mut call = Call {
        args: Vec::with_capacity(args.len()),
        crate_name: String::new(),
        crate_types: Vec::new(),
        emits: Vec::new(),
        out_dir: PathBuf::new(),
        extra_filename: String::new(),
        input: PathBuf::new(),
        externs: Vec::new(),
        native_paths: Vec::new(),
        target: None,
        artifact_notifications: false,
    };
    // Source on stdin is a probe (autocfg, rustc_version) whatever else the arguments say.
    if args.iter().any(|arg| arg == "-") {
        return Parsed::Probe;
    }
    let mut test = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let start = i;
        // `--flag=value`, `--flag value`, `-Cvalue`, `-C value`.
        let (flag, inline) = split_flag(arg);
        let takes_value = takes_value(flag);
        let value = if takes_value {
            match inline {
                Some(value) => value.to_owned(),
                None => {
                    i += 1;
                    match args.get(i) {
                        Some(value) => value.clone(),
                        None => return Parsed::PassThrough("a flag is missing its value"),
                    }
                }
            }
        } else {
            String::new()
        };
        let mut keep = true;
        match flag {
            "-V" | "--version" | "-vV" | "-v" | "--print" | "--explain" | "-h" | "--help" => return Parsed::Probe,
            "--crate-name" => call.crate_name = value.clone(),
            "--crate-type" => call.crate_types.extend(value.split(',').map(str::to_owned)),
            "--test" => test = true,
            "--emit" => {
                for kind in value.split(',') {
                    call.emits.push(match kind {
                        "dep-info" => Emit::DepInfo,
                        "metadata" => Emit::Metadata,
                        "link" => Emit::Link,
                        _ => return Parsed::PassThrough("--emit of something other than dep-info, metadata or link"),
                    });
                }
            }
            "--out-dir" => call.out_dir = PathBuf::from(&value),
            "--extern" => {
                // `NAME=PATH`, or `NAME` alone for a sysroot crate; cargo may prefix `noprelude:`/`priv:`.
                let spec = value.rsplit_once(':').filter(|(m, _)| !m.contains('=')).map_or(value.as_str(), |(_, s)| s);
                if let Some((_, path)) = spec.split_once('=') {
                    call.externs.push(PathBuf::from(path));
                }
            }
            "-L" => {
                let (kind, path) = value.split_once('=').unwrap_or(("all", &value));
                match kind {
                    "dependency" | "crate" => {}
                    "native" | "all" => call.native_paths.push(PathBuf::from(path)),
                    _ => {
                        return Parsed::PassThrough(
                            "-L with a search kind other than dependency, crate, native or all",
                        );
                    }
                }
            }
            "--target" => call.target = Some(value.clone()),
            "--json" => call.artifact_notifications = value.split(',').any(|part| part == "artifacts"),
            "-C" | "--codegen" => {
                let (name, option) = value.split_once('=').unwrap_or((&value, ""));
                match name {
                    "incremental" => keep = false,
                    "extra-filename" => call.extra_filename = option.to_owned(),
                    "split-debuginfo" if option != "off" => {
                        return Parsed::PassThrough("-C split-debuginfo (extra output files)");
                    }
                    "split-debuginfo" => {}
                    "linker" | "link-arg" | "link-args" | "linker-flavor" | "link-self-contained" => {
                        return Parsed::PassThrough("a custom linker or linker arguments");
                    }
                    _ if KNOWN_CODEGEN.contains(&name) => {}
                    _ => return Parsed::PassThrough("an unknown -C codegen option"),
                }
            }
            "-g" | "-O" => {}
            "-o" => return Parsed::PassThrough("-o instead of --out-dir"),
            "--sysroot" => return Parsed::PassThrough("a custom --sysroot"),
            "-Z" => return Parsed::PassThrough("an unstable -Z option"),
            "--remap-path-prefix" => return Parsed::PassThrough("a --remap-path-prefix of its own"),
            _ if PLAIN_VALUE_FLAGS.contains(&flag) => {}
            _ if arg.starts_with('@') => return Parsed::PassThrough("an @argfile"),
            _ if arg.starts_with('-') => return Parsed::PassThrough("an unknown rustc flag"),
            _ => {
                if !call.input.as_os_str().is_empty() {
                    return Parsed::PassThrough("more than one input file");
                }
                call.input = PathBuf::from(arg);
            }
        }
        if keep {
            call.args.extend_from_slice(&args[start..=i]);
        }
        i += 1;
    }
    if call.input.as_os_str().is_empty() || call.crate_name.is_empty() {
        return Parsed::Probe;
    }
    if test {
        call.crate_types = vec!["bin".into()];
    }
    if call.crate_types.is_empty() {
        call.crate_types.push("bin".into());
    }
    if call.emits.is_empty() {
        call.emits.push(Emit::Link);
    }
    call.emits.sort();
    call.emits.dedup();
    if call.out_dir.as_os_str().is_empty() {
        return Parsed::PassThrough("no --out-dir");
    }
    // Output names are built from these: a `/` or `..` in them would name files outside the out-dir.
    // rustc refuses such a crate name itself; running it for real lets it say so.
    let name_like =
        |text: &str, extra: &[char]| text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c));
    if !name_like(&call.crate_name, &[]) || !name_like(&call.extra_filename, &['-']) {
        return Parsed::PassThrough("a crate name or extra filename that is not a plain name");
    }
    if call
        .crate_types
        .iter()
        .any(|t| !matches!(t.as_str(), "bin" | "lib" | "rlib" | "proc-macro" | "cdylib" | "staticlib"))
    {
        return Parsed::PassThrough("a crate type other than bin, lib, rlib, proc-macro, cdylib or staticlib");
    }
    if let Some(target) = &call.target
        && !(target.contains("-linux-gnu") || target.contains("-linux-musl"))
    {
        return Parsed::PassThrough("a target whose file names the model does not know");
    }
    Parsed::Unit(Box::new(call))
}

/// The paths of every `--extern NAME=PATH` in raw arguments, whatever else they hold: a call passed
/// through still needs its dependencies' real bytes.
pub fn extern_paths(args: &[String]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let spec = match arg.strip_prefix("--extern=") {
            Some(spec) => spec,
            None if arg == "--extern" => match iter.next() {
                Some(spec) => spec,
                None => break,
            },
            None => continue,
        };
        if let Some((_, path)) = spec.split_once('=') {
            paths.push(PathBuf::from(path));
        }
    }
    paths
}

/// Splits `--flag=value` and `-Cvalue`; other arguments come back whole.
fn split_flag(arg: &str) -> (&str, Option<&str>) {
    if let Some(rest) = arg.strip_prefix("--")
        && let Some((flag, value)) = rest.split_once('=')
    {
        return (&arg[..flag.len() + 2], Some(value));
    }
    for short in ["-C", "-L", "-l", "-A", "-W", "-D", "-F", "-Z"] {
        if let Some(value) = arg.strip_prefix(short)
            && !value.is_empty()
        {
            return (short, Some(value));
        }
    }
    (arg, None)
}

fn takes_value(flag: &str) -> bool {
    matches!(
        flag,
        "--crate-name"
            | "--crate-type"
            | "--emit"
            | "--out-dir"
            | "--extern"
            | "-L"
            | "--target"
            | "--json"
            | "-C"
            | "--codegen"
            | "-o"
            | "--sysroot"
            | "-Z"
            | "--remap-path-prefix"
            | "--print"
            | "--explain"
    ) || PLAIN_VALUE_FLAGS.contains(&flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn unit(text: &str) -> Call {
        match parse(&args(text)) {
            Parsed::Unit(call) => *call,
            other => panic!("{text}: {other:?}"),
        }
    }

    const LIB: &str = "--crate-name util --edition=2021 util/src/lib.rs --error-format=json \
        --json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type lib \
        --emit=dep-info,metadata,link -C embed-bitcode=no -C debuginfo=2 --check-cfg cfg(docsrs,test) \
        -C metadata=a40c2f572b130ff4 -C extra-filename=-d6a5ff6254e3083c --out-dir /w/target/debug/deps \
        -L dependency=/w/target/debug/deps --extern dep=/w/target/debug/deps/libdep-1.rmeta -C incremental=/w/inc";

    #[test]
    fn a_cargo_lib_unit() {
        let call = unit(LIB);
        assert_eq!(call.crate_name, "util");
        assert_eq!(call.emits, [Emit::DepInfo, Emit::Metadata, Emit::Link]);
        assert!(call.artifact_notifications && !call.links() && !call.is_build_script());
        assert_eq!(call.externs, [PathBuf::from("/w/target/debug/deps/libdep-1.rmeta")]);
        let outputs: Vec<_> = call.outputs().into_iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(
            outputs,
            [
                "/w/target/debug/deps/util-d6a5ff6254e3083c.d",
                "/w/target/debug/deps/libutil-d6a5ff6254e3083c.rmeta",
                "/w/target/debug/deps/libutil-d6a5ff6254e3083c.rlib",
            ]
        );
        assert!(!call.args.iter().any(|a| a.contains("incremental")), "-C incremental is dropped");
        assert_eq!(call.args.len(), args(LIB).len() - 2, "everything else is kept, in order");
        assert_eq!(&call.args[..3], ["--crate-name", "util", "--edition=2021"]);
    }

    #[test]
    fn bins_tests_and_build_scripts() {
        let bin = unit(
            "--crate-name app app/src/main.rs --crate-type bin --emit=dep-info,link -C extra-filename=-e --out-dir /o",
        );
        assert!(bin.links());
        assert_eq!(bin.outputs()[1].0, PathBuf::from("/o/app-e"));
        let test =
            unit("--crate-name app app/src/lib.rs --test --emit=dep-info,link -C extra-filename=-t --out-dir /o");
        assert_eq!(test.outputs()[1].0, PathBuf::from("/o/app-t"));
        let script =
            unit("--crate-name build_script_build app/build.rs --crate-type bin --emit=dep-info,link --out-dir /o");
        assert!(script.is_build_script());
        let macro_ = unit(
            "--crate-name m m/src/lib.rs --crate-type proc-macro --emit=dep-info,link -C extra-filename=-m --out-dir /o",
        );
        assert_eq!(macro_.outputs()[1].0, PathBuf::from("/o/libm-m.so"));
        let both =
            unit("--crate-name c c/src/lib.rs --crate-type cdylib --crate-type staticlib --emit=link --out-dir /o");
        assert_eq!(both.outputs().len(), 2);
    }

    #[test]
    fn probes_are_not_compilations() {
        for probe in [
            "-vV",
            "- --crate-name ___ --print=file-names --crate-type bin",
            "--crate-name autocfg_1 --emit=llvm-ir --out-dir /o -",
            "--version",
        ] {
            assert_eq!(parse(&args(probe)), Parsed::Probe, "{probe}");
        }
    }

    #[test]
    fn anything_unknown_runs_for_real() {
        for (extra, reason) in [
            ("--frobnicate", "an unknown rustc flag"),
            ("-C linker=clang", "a custom linker or linker arguments"),
            ("-Cfuture-option=1", "an unknown -C codegen option"),
            ("-Z time-passes", "an unstable -Z option"),
            ("--remap-path-prefix=/a=/b", "a --remap-path-prefix of its own"),
            ("--emit=llvm-ir", "--emit of something other than dep-info, metadata or link"),
            ("@args.txt", "an @argfile"),
            ("-C split-debuginfo=packed", "-C split-debuginfo (extra output files)"),
            ("other.rs", "more than one input file"),
            ("--target wasm32-unknown-unknown", "a target whose file names the model does not know"),
        ] {
            assert_eq!(parse(&args(&format!("{LIB} {extra}"))), Parsed::PassThrough(reason), "{extra}");
        }
        assert_eq!(extern_paths(&args(LIB)), [PathBuf::from("/w/target/debug/deps/libdep-1.rmeta")]);
        let lints = unit(&format!("{LIB} --allow=unexpected_cfgs --warn=unexpected_cfgs --deny warnings"));
        assert!(lints.args.ends_with(&["--deny".to_owned(), "warnings".to_owned()]));
        let dylib = "--crate-name d d/src/lib.rs --crate-type dylib --out-dir /o";
        assert!(matches!(parse(&args(dylib)), Parsed::PassThrough(_)));
    }

    #[test]
    fn outputs_never_leave_the_out_dir() {
        // Found by fuzz/fuzz_targets/rustc_args.rs: a crate name with a `/` made `/debug/deps` an output.
        let reason = Parsed::PassThrough("a crate name or extra filename that is not a plain name");
        for (name, extra) in [("/debug/deps", "-0123"), ("a/../../b", "-1"), ("util", "-1/../../x"), ("util", "/x")] {
            let call =
                format!("--crate-name {name} u/src/lib.rs --crate-type lib -C extra-filename={extra} --out-dir /o");
            assert_eq!(parse(&args(&call)), reason, "{call}");
        }
    }
}
