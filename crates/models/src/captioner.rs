//! Captions. `Captioner` is the seam a learned encoder–decoder with beam
//! search would implement; the default is a template captioner that composes
//! captions from the classifier's concepts and says so in its model config.

pub use domain::analysis::Caption;

/// A concept as the captioner sees it.
#[derive(Debug, Clone)]
pub struct CaptionConcept {
    pub name: String,
    pub confidence: f32,
    /// Broad concepts this class rolls up to (e.g. "tabby cat" → cat, animal):
    /// two classes sharing one are alternatives for the same thing, not two things.
    pub groups: Vec<String>,
}

/// What a captioner gets for one photo: the specific concepts, best first,
/// and the model-input pixels for captioners that look at the image.
pub struct CaptionInput<'a> {
    pub concepts: &'a [CaptionConcept],
}

pub trait Captioner: Send + Sync {
    /// Up to `max` captions, most probable first.
    fn caption(&self, input: &CaptionInput, max: usize) -> Vec<Caption>;
}

/// Composes "A SUBJECT" or "A SUBJECT WITH AN OTHER" from the concepts.
///
/// Honest probabilities: a caption's words are drawn from the classifier's
/// distribution, so the first word of a concept carries log(confidence), the
/// rest of that concept's words are certain given the first (log 1 = 0), and
/// template words ("A", "WITH") are not listed. The caption's probability is
/// the product of its concepts' confidences, i.e. exp(sum of word log-probs).
pub struct TemplateCaptioner {
    /// A second object is mentioned only when at least this confident.
    pub min_companion_confidence: f32,
}

impl Default for TemplateCaptioner {
    fn default() -> Self {
        TemplateCaptioner {
            min_companion_confidence: 0.2,
        }
    }
}

impl TemplateCaptioner {
    fn companion<'a>(
        &self,
        subject: &CaptionConcept,
        all: &'a [CaptionConcept],
    ) -> Option<&'a CaptionConcept> {
        all.iter().find(|c| {
            c.name != subject.name
                && c.confidence >= self.min_companion_confidence
                && !c.groups.iter().any(|g| subject.groups.contains(g))
        })
    }
}

impl Captioner for TemplateCaptioner {
    fn caption(&self, input: &CaptionInput, max: usize) -> Vec<Caption> {
        let mut captions: Vec<Caption> = input
            .concepts
            .iter()
            .filter(|c| c.confidence > 0.0)
            .take(max)
            .map(|subject| {
                let mut caption = Caption {
                    caption: String::new(),
                    probability: 1.0,
                    words_probability: Vec::new(),
                };
                append_phrase(&mut caption, subject, "");
                if let Some(other) = self.companion(subject, input.concepts) {
                    append_phrase(&mut caption, other, " WITH");
                }
                caption
            })
            .collect();
        captions.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        captions
    }
}

/// Appends `joiner`, an article and the concept's words to the caption.
fn append_phrase(caption: &mut Caption, concept: &CaptionConcept, joiner: &str) {
    let phrase = concept.name.to_uppercase();
    let has_article = ["A ", "AN ", "THE "].iter().any(|a| phrase.starts_with(a));
    caption.caption.push_str(joiner);
    if !caption.caption.is_empty() {
        caption.caption.push(' ');
    }
    if !has_article {
        caption.caption.push_str(article(&phrase));
        caption.caption.push(' ');
    }
    caption.caption.push_str(&phrase);
    let log_p = concept.confidence.max(f32::MIN_POSITIVE).ln();
    let mut words = phrase.split_whitespace();
    if has_article {
        words.next();
    }
    for (i, word) in words.enumerate() {
        caption
            .words_probability
            .push((word.to_string(), if i == 0 { log_p } else { 0.0 }));
    }
    caption.probability *= concept.confidence;
}

fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('A' | 'E' | 'I' | 'O' | 'U') => "AN",
        _ => "A",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concept(name: &str, confidence: f32, groups: &[&str]) -> CaptionConcept {
        CaptionConcept {
            name: name.into(),
            confidence,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn composes_a_subject_with_a_different_companion() {
        let concepts = [
            concept("ladybug", 0.8, &["insect", "animal"]),
            concept("leaf beetle", 0.1, &["insect", "animal"]),
            concept("daisy", 0.5, &["flower", "plant"]),
        ];
        let captions = TemplateCaptioner::default().caption(
            &CaptionInput {
                concepts: &concepts,
            },
            1,
        );
        assert_eq!(captions.len(), 1);
        let c = &captions[0];
        assert_eq!(c.caption, "A LADYBUG WITH A DAISY");
        assert!((c.probability - 0.4).abs() < 1e-6);
        let sum: f32 = c.words_probability.iter().map(|(_, lp)| lp).sum();
        assert!(
            (sum.exp() - c.probability).abs() < 1e-6,
            "log-probs add up to the probability"
        );
    }

    #[test]
    fn keeps_names_that_carry_their_own_article_and_picks_an() {
        let concepts = [
            concept("a cat having a striped coat", 0.39, &["cat"]),
            concept("Egyptian Mau", 0.36, &["cat"]),
        ];
        let captions = TemplateCaptioner::default().caption(
            &CaptionInput {
                concepts: &concepts,
            },
            3,
        );
        assert_eq!(captions[0].caption, "A CAT HAVING A STRIPED COAT");
        assert_eq!(captions[0].words_probability[0].0, "CAT");
        assert_eq!(captions[1].caption, "AN EGYPTIAN MAU");
        assert_eq!(captions[1].words_probability[1], ("MAU".to_string(), 0.0));
    }
}
