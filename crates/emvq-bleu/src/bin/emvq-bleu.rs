//! `emvq-bleu`: the BLEU/chrF scorer on its own, without LibTorch.

use clap::Parser;
use emvq_bleu::BleuArgs;

fn main() -> anyhow::Result<()> {
    emvq_bleu::run(&BleuArgs::parse())
}
