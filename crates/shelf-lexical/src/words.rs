//! The tokenizer: words split on anything not alphanumeric, and text in scripts written
//! without spaces (Chinese, Japanese; Korean too) cut into overlapping character bigrams.
//!
//! tantivy's `SimpleTokenizer` keeps a run of Han characters as one token, so "沙发" never
//! matches a title that says "三人座浅灰色布艺沙发". A dictionary segmenter (jieba) splits that
//! title into 三人 / 座 / 浅灰色 / 布艺 / 沙发 and still misses a query for 灰色 inside 浅灰色;
//! bigrams (三人 人座 座浅 浅灰 灰色 色布 布艺 艺沙 沙发) find every two-character word wherever
//! it sits, need no dictionary, and the query is cut the same way, so BM25 over its bigrams
//! ranks titles holding more of them first (Lucene's CJKAnalyzer does the same). A run of one
//! such character is kept as a token of its own.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// How a run of CJK characters becomes tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CjkSplit {
    /// Overlapping character pairs (a lone character as itself): shelf's choice.
    #[default]
    Bigrams,
    /// One token per character.
    Characters,
    /// The whole run as one token (what tantivy's `SimpleTokenizer` does).
    Runs,
}

/// Splits like tantivy's `SimpleTokenizer`, with CJK runs split by [`CjkSplit`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ShopTokenizer {
    pub(crate) cjk: CjkSplit,
}

/// The tokens of one text, produced up front.
pub(crate) struct ShopTokens {
    tokens: Vec<Token>,
    /// Index of the current token + 1 (0 before the first `advance`).
    next: usize,
}

impl Tokenizer for ShopTokenizer {
    type TokenStream<'a> = ShopTokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> ShopTokens {
        ShopTokens {
            tokens: tokens(text, self.cjk),
            next: 0,
        }
    }
}

impl TokenStream for ShopTokens {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

/// Whether `c` belongs to a script written without spaces between words: CJK ideographs
/// (with extensions and compatibility forms), Hiragana, Katakana, and Hangul syllables.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF        // Hiragana, Katakana
        | 0x3400..=0x4DBF      // CJK extension A
        | 0x4E00..=0x9FFF      // CJK unified ideographs
        | 0xAC00..=0xD7AF      // Hangul syllables
        | 0xF900..=0xFAFF      // CJK compatibility ideographs
        | 0x20000..=0x2FA1F    // CJK extensions B–F, compatibility supplement
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Cjk,
    Word,
    Gap,
}

fn class(c: char) -> Class {
    if is_cjk(c) {
        Class::Cjk
    } else if c.is_alphanumeric() {
        Class::Word
    } else {
        Class::Gap
    }
}

fn tokens(text: &str, cjk: CjkSplit) -> Vec<Token> {
    let mut out = Vec::new();
    let mut push = |from: usize, to: usize| {
        out.push(Token {
            offset_from: from,
            offset_to: to,
            position: out.len(),
            text: text[from..to].to_owned(),
            position_length: 1,
        })
    };
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match class(c) {
            Class::Gap => {}
            Class::Word => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, c)) = chars.peek() {
                    if class(c) != Class::Word {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                push(start, end);
            }
            Class::Cjk => {
                // Character boundaries of the run, then one token per adjacent pair.
                let mut bounds = vec![start, start + c.len_utf8()];
                while let Some(&(i, c)) = chars.peek() {
                    if class(c) != Class::Cjk {
                        break;
                    }
                    bounds.push(i + c.len_utf8());
                    chars.next();
                }
                match cjk {
                    CjkSplit::Bigrams => {
                        if bounds.len() == 2 {
                            push(bounds[0], bounds[1]);
                        }
                        for pair in bounds.windows(3) {
                            push(pair[0], pair[2]);
                        }
                    }
                    CjkSplit::Characters => {
                        for pair in bounds.windows(2) {
                            push(pair[0], pair[1]);
                        }
                    }
                    CjkSplit::Runs => push(start, *bounds.last().expect("two bounds")),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        tokens(text, CjkSplit::Bigrams)
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn the_other_splits_for_comparison() {
        let split = |cjk| -> Vec<String> {
            tokens("red 沙发床", cjk)
                .into_iter()
                .map(|t| t.text)
                .collect()
        };
        assert_eq!(split(CjkSplit::Characters), ["red", "沙", "发", "床"]);
        assert_eq!(split(CjkSplit::Runs), ["red", "沙发床"]);
    }

    #[test]
    fn latin_text_splits_like_the_simple_tokenizer() {
        assert_eq!(
            texts("Grey sofa, 3-seat (oak)"),
            ["Grey", "sofa", "3", "seat", "oak"]
        );
        assert_eq!(texts("Café über"), ["Café", "über"]);
        assert!(texts(" ,.- ").is_empty());
    }

    #[test]
    fn cjk_runs_become_overlapping_bigrams() {
        assert_eq!(texts("灰色沙发"), ["灰色", "色沙", "沙发"]);
        assert_eq!(texts("手机"), ["手机"]);
        assert_eq!(texts("伞"), ["伞"]);
        assert_eq!(texts("カメラ"), ["カメ", "メラ"]);
        assert_eq!(texts("가방 신발"), ["가방", "신발"]);
    }

    #[test]
    fn mixed_scripts_split_at_the_script_boundary() {
        assert_eq!(texts("55英寸4K电视"), ["55", "英寸", "4K", "电视"]);
        assert_eq!(
            texts("iPhone15手机壳，黑色"),
            ["iPhone15", "手机", "机壳", "黑色"]
        );
    }

    #[test]
    fn offsets_and_positions_point_into_the_text() {
        let text = "red 沙发床";
        let tokens = tokens(text, CjkSplit::Bigrams);
        for (i, token) in tokens.iter().enumerate() {
            assert_eq!(&text[token.offset_from..token.offset_to], token.text);
            assert_eq!(token.position, i);
        }
        let mut stream = ShopTokenizer::default().token_stream(text);
        let mut seen = Vec::new();
        while stream.advance() {
            seen.push(stream.token().text.clone());
        }
        assert_eq!(seen, ["red", "沙发", "发床"]);
    }
}
