//! `cargo xtask distill --teacher runs/teacher/NAME [ARGS…]`: sequence-level
//! distillation of the teacher's training targets (`emvq distill`, release
//! build) into `runs/distill/<name>/`; an interrupted run resumes when the
//! same command is given again.

use std::path::Path;

use anyhow::Result;

/// Builds and runs `emvq distill --teacher TEACHER ARGS…`.
pub fn distill(teacher: &Path, args: &[String]) -> Result<()> {
    crate::setup::ensure(None)?;
    crate::run(
        crate::emvq()
            .arg("distill")
            .arg("--teacher")
            .arg(teacher)
            .args(args),
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn further_arguments_pass_through_to_emvq() {
        let argv = [
            "xtask",
            "distill",
            "--teacher",
            "runs/teacher/t",
            "--beam",
            "2",
            "--out",
            "o",
        ];
        match crate::Cli::try_parse_from(argv).unwrap().task {
            crate::Task::Distill { teacher, args } => {
                assert_eq!(teacher, std::path::Path::new("runs/teacher/t"));
                assert_eq!(args, ["--beam", "2", "--out", "o"]);
            }
            _ => panic!("not the distill task"),
        }
        assert!(crate::Cli::try_parse_from(["xtask", "distill", "--beam", "2"]).is_err());
    }
}
