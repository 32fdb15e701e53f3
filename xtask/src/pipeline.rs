//! The main job and the paper's table as chains of `emvq` stages:
//!
//! - `cargo xtask pipeline`: runtime check → data preparation → teacher
//!   (20 min) → distillation (the teacher's beam search over the 29k training
//!   targets, ~12 min) → NAT with EM on the distilled targets (25 min) →
//!   `bench-latency` (AR beam 4, AR greedy, NAT one pass and rescored, batch
//!   1 on test_2016_flickr) with the report in `runs/pipeline/report.md`.
//! - `cargo xtask paper-table`: the same first stages, then every NAT of the
//!   table (plain NAT, LT + semhash, VQ and EM with and without
//!   distillation, EM + distillation with n_c = 4), then `bench-latency`
//!   over `configs/multi30k/latency_paper.toml`; it prints its time estimate
//!   before it starts.
//!
//! Every stage is skipped when its output is complete (a model file, a
//! distillation record) and resumed when it was interrupted (checkpoints, a
//! partly distilled corpus); [`plan`] decides, from the files alone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::{emvq, project_root, run, setup};

/// The teacher run of both pipelines (configs/multi30k/teacher.toml's name).
pub const TEACHER: &str = "runs/teacher/multi30k";
/// The distilled corpus the NAT configs read (`[data] train_dir`).
pub const DISTILLED: &str = "runs/distill/multi30k";

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// What the progress line says.
    pub title: String,
    /// `emvq` arguments.
    pub args: Vec<String>,
    /// The file whose presence means the stage is complete (none: always run).
    pub done_when: Option<PathBuf>,
    /// A folder whose presence means an interrupted run to resume, and the
    /// flag that resumes it.
    pub resume: Option<(PathBuf, String)>,
    /// Minutes the stage takes on the 2-core CPU (for the estimate).
    pub minutes: f64,
}

/// What to do with a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Skip,
    Run,
    Resume,
}

/// The action of every stage, from the files under `root`.
pub fn plan(root: &Path, stages: &[Stage]) -> Vec<Action> {
    stages
        .iter()
        .map(|s| match (&s.done_when, &s.resume) {
            (Some(done), _) if root.join(done).is_file() => Action::Skip,
            (_, Some((dir, _))) if non_empty_dir(&root.join(dir)) => Action::Resume,
            _ => Action::Run,
        })
        .collect()
}

fn non_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `[train] max_minutes` of a TOML config (a line scan: xtask has no TOML
/// parser); `None` when absent.
pub fn max_minutes(config_text: &str) -> Option<f64> {
    let mut section = String::new();
    for line in config_text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        } else if section == "train" {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "max_minutes" {
                    return value.trim().parse().ok();
                }
            }
        }
    }
    None
}

/// The `name` of a run config (a line scan, top level).
pub fn config_name(config_text: &str) -> Option<String> {
    for line in config_text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            return None;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "name" {
                return Some(value.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

/// Data preparation, teacher and distillation: the stages both pipelines
/// start with.
pub fn common_stages(root: &Path) -> Vec<Stage> {
    let teacher_minutes = std::fs::read_to_string(root.join("configs/multi30k/teacher.toml"))
        .ok()
        .and_then(|t| max_minutes(&t))
        .unwrap_or(20.0);
    vec![
        Stage {
            title: "data preparation (Multi30k, 8k joint BPE) → runs/data/multi30k/".into(),
            args: strings(&["prepare-data", "--config", "configs/multi30k/data.toml"]),
            done_when: Some("runs/data/multi30k/stats.json".into()),
            resume: None,
            minutes: 1.0,
        },
        Stage {
            title: format!("teacher, {teacher_minutes:.0} minutes of training → {TEACHER}/"),
            args: strings(&["train-teacher", "--config", "configs/multi30k/teacher.toml"]),
            done_when: Some(format!("{TEACHER}/model.safetensors").into()),
            resume: Some((format!("{TEACHER}/checkpoints").into(), "--resume".into())),
            minutes: teacher_minutes + 1.0,
        },
        Stage {
            // emvq distill resumes its chunks by itself.
            title: format!("distillation: the teacher's beam search rewrites the 29k training targets → {DISTILLED}/"),
            args: strings(&["distill", "--teacher", TEACHER, "--out", DISTILLED]),
            done_when: Some(format!("{DISTILLED}/record.json").into()),
            resume: None,
            minutes: 13.0,
        },
    ]
}

/// Training of the NAT of `config` (a path under the root).
pub fn nat_stage(root: &Path, config: &str) -> Stage {
    let text = std::fs::read_to_string(root.join(config)).unwrap_or_default();
    let name = config_name(&text).unwrap_or_else(|| {
        Path::new(config)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    });
    let minutes = max_minutes(&text).unwrap_or(25.0);
    let run = format!("runs/nat/{name}");
    Stage {
        title: format!("NAT {config}, {minutes:.0} minutes of training → {run}/"),
        args: strings(&["train-nat", "--config", config]),
        done_when: Some(format!("{run}/model.safetensors").into()),
        resume: Some((format!("{run}/checkpoints").into(), "--resume".into())),
        minutes: minutes + 1.0,
    }
}

/// The table (always rebuilt: it is the pipelines' output).
pub fn table_stage(list: &str, report: Option<&str>, minutes: f64) -> Stage {
    let mut args = strings(&["bench-latency", "--list", list, "--threads", "1"]);
    if let Some(r) = report {
        args.extend(strings(&["--report", r]));
    }
    Stage {
        title: format!(
            "latency table at batch 1 ({list}){}",
            report.map_or(String::new(), |r| format!(", report → {r}/report.md"))
        ),
        args,
        done_when: None,
        resume: None,
        minutes,
    }
}

/// The main job's stages.
pub fn main_stages(root: &Path) -> Vec<Stage> {
    let mut stages = common_stages(root);
    stages.push(nat_stage(root, "configs/multi30k/nat_em.toml"));
    stages.push(table_stage(
        "configs/multi30k/latency.toml",
        Some("runs/pipeline"),
        4.0,
    ));
    stages
}

/// Every NAT config of the paper's table.
pub const PAPER_NATS: [&str; 7] = [
    "configs/multi30k/nat_plain.toml",
    "configs/multi30k/nat_semhash.toml",
    "configs/multi30k/nat_vq_raw.toml",
    "configs/multi30k/nat_em_raw.toml",
    "configs/multi30k/nat_vq.toml",
    "configs/multi30k/nat_em.toml",
    "configs/multi30k/nat_em_nc4.toml",
];

/// `paper-table`'s stages.
pub fn paper_stages(root: &Path) -> Vec<Stage> {
    let mut stages = common_stages(root);
    stages.extend(PAPER_NATS.iter().map(|c| nat_stage(root, c)));
    stages.push(table_stage(
        "configs/multi30k/latency_paper.toml",
        Some("runs/pipeline/paper"),
        10.0,
    ));
    stages
}

/// Minutes the stages still to run take.
pub fn estimate(stages: &[Stage], actions: &[Action]) -> f64 {
    stages
        .iter()
        .zip(actions)
        .filter(|(_, a)| **a != Action::Skip)
        .map(|(s, _)| s.minutes)
        .sum()
}

/// Runs `stages` in order, each skipped, resumed or run as [`plan`] says.
pub fn execute(name: &str, stages: &[Stage]) -> Result<()> {
    setup::ensure(None)?;
    let root = project_root();
    let actions = plan(&root, stages);
    let total = stages.len() + 1;
    eprintln!(
        "{name}: {} stages, about {:.0} minutes of work left on a 2-core CPU ({:.1} hours)",
        total,
        estimate(stages, &actions),
        estimate(stages, &actions) / 60.0
    );
    let start = Instant::now();
    eprintln!("{name} [1/{total}]: runtime");
    run(emvq().arg("info"))?;
    for (i, (stage, action)) in stages.iter().zip(&actions).enumerate() {
        let step = format!(
            "{name} [{}/{total}] ({:.0} min in)",
            i + 2,
            start.elapsed().as_secs_f64() / 60.0
        );
        match action {
            Action::Skip => {
                eprintln!(
                    "{step}: {} — done already ({})",
                    stage.title,
                    stage.done_when.as_ref().expect("skip").display()
                );
                continue;
            }
            Action::Resume => eprintln!("{step}: {} — resuming", stage.title),
            Action::Run => eprintln!("{step}: {} (~{:.0} min)", stage.title, stage.minutes),
        }
        let mut cmd = emvq();
        cmd.args(&stage.args);
        if let (Action::Resume, Some((_, flag))) = (action, &stage.resume) {
            cmd.arg(flag);
        }
        run(&mut cmd)?;
    }
    eprintln!(
        "{name}: done in {:.1} minutes",
        start.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// `cargo xtask pipeline`.
pub fn pipeline() -> Result<()> {
    let stages = main_stages(&project_root());
    execute("pipeline", &stages)?;
    eprintln!("pipeline: table runs/latency/multi30k/table.md, report runs/pipeline/report.md");
    Ok(())
}

/// `cargo xtask paper-table`.
pub fn paper_table() -> Result<()> {
    let root = project_root();
    let stages = paper_stages(&root);
    let left = estimate(&stages, &plan(&root, &stages));
    eprintln!(
        "paper-table trains every model of the paper's table on this machine's CPU: about {:.1} hours \
         ({left:.0} minutes) for what is not trained yet; interrupt at any time, a rerun resumes.",
        left / 60.0
    );
    execute("paper-table", &stages)?;
    eprintln!("paper-table: table runs/latency/multi30k_paper/table.md, report runs/pipeline/paper/report.md");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, file: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn stages_are_skipped_resumed_or_run_from_their_files() {
        let root = std::env::temp_dir().join(format!("xtask_pipeline_plan_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let stages = main_stages(&project_root()); // the shipped configs, planned against `root`
        let titles: Vec<&str> = stages.iter().map(|s| s.args[0].as_str()).collect();
        assert_eq!(
            titles,
            [
                "prepare-data",
                "train-teacher",
                "distill",
                "train-nat",
                "bench-latency"
            ]
        );
        use Action::*;
        assert_eq!(plan(&root, &stages), [Run, Run, Run, Run, Run]);
        // Data done, teacher interrupted.
        touch(&root, "runs/data/multi30k/stats.json");
        touch(
            &root,
            &format!("{TEACHER}/checkpoints/step_00000050.safetensors"),
        );
        assert_eq!(plan(&root, &stages), [Skip, Resume, Run, Run, Run]);
        // An empty checkpoint folder is nothing to resume.
        std::fs::create_dir_all(root.join("runs/nat/multi30k_em/checkpoints")).unwrap();
        assert_eq!(plan(&root, &stages)[3], Run);
        // Teacher finished, distillation complete, NAT interrupted.
        touch(&root, &format!("{TEACHER}/model.safetensors"));
        touch(&root, &format!("{DISTILLED}/record.json"));
        touch(
            &root,
            "runs/nat/multi30k_em/checkpoints/step_00000050.safetensors",
        );
        assert_eq!(plan(&root, &stages), [Skip, Skip, Skip, Resume, Run]);
        touch(&root, "runs/nat/multi30k_em/model.safetensors");
        let actions = plan(&root, &stages);
        assert_eq!(
            actions,
            [Skip, Skip, Skip, Skip, Run],
            "the table is always rebuilt"
        );
        assert_eq!(estimate(&stages, &actions), stages[4].minutes);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn shipped_configs_give_the_stage_names_and_budgets() {
        let root = project_root();
        let stages = main_stages(&root);
        assert_eq!(
            stages[3].done_when.as_deref(),
            Some(Path::new("runs/nat/multi30k_em/model.safetensors"))
        );
        let teacher = std::fs::read_to_string(root.join("configs/multi30k/teacher.toml")).unwrap();
        assert_eq!(config_name(&teacher).as_deref(), Some("multi30k"));
        // The main job fits its 75-minute budget (build time aside).
        let all = estimate(&stages, &vec![Action::Run; stages.len()]);
        assert!(all <= 70.0, "the pipeline's stages add up to {all} minutes");
        let paper = paper_stages(&root);
        assert_eq!(paper.len(), 3 + PAPER_NATS.len() + 1);
        for config in PAPER_NATS {
            assert!(root.join(config).is_file(), "{config} missing");
        }
    }

    #[test]
    fn line_scans_of_configs() {
        let text = "name = \"em\" # run\nmax_minutes = 3.0\n[train]\nlr = 1\nmax_minutes = 25.0   # budget\n[decode]\nmax_minutes = 9\n";
        assert_eq!(max_minutes(text), Some(25.0));
        assert_eq!(config_name(text).as_deref(), Some("em"));
        assert_eq!(max_minutes("[train]\nmax_steps = 5\n"), None);
        assert_eq!(config_name("[data]\nname = \"x\"\n"), None);
    }
}
