use std::path::PathBuf;

use serde_json::json;

use crate::loaded;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "file"])))]
pub struct Args {
    /// The GGUF model whose tokenizer is used.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// The text to tokenize.
    #[arg(long)]
    text: Option<String>,
    /// A UTF-8 file to tokenize.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Do not add BOS/EOS even when the model asks for them.
    #[arg(long)]
    no_special: bool,
    /// Print one JSON object with `ids` and `pieces`.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = loaded::text_arg(a.text, a.file)?;
    let f = loaded::open(&a.model)?;
    let tok = loaded::tokenizer(&f)?;
    let ids = tok.encode(&text, !a.no_special)?;
    if a.json {
        let pieces: Vec<Option<String>> = ids.iter().map(|&i| tok.token_text(i)).collect();
        println!(
            "{}",
            json!({ "ids": ids, "pieces": pieces, "n_tokens": ids.len() })
        );
    } else {
        for id in ids {
            println!("{id:>6} -> '{}'", tok.token_text(id).unwrap_or_default());
        }
    }
    Ok(())
}
