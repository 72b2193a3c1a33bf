//! The crate's one error type, with a stable snake_case code per variant for the HTTP edge.

use crate::Format;

/// Everything that can go wrong turning bytes into pixels.
///
/// Variants carry what a caller needs to explain the refusal; [`ImagingError::code`]
/// gives the stable string the API puts in its JSON error body.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ImagingError {
    /// The encoded file is larger than [`crate::Limits::max_bytes`].
    #[error("image is {bytes} bytes, more than the limit of {limit} bytes")]
    TooManyBytes { bytes: usize, limit: usize },

    /// The header declares more pixels than [`crate::Limits::max_pixels`];
    /// refused before any pixel is decoded.
    #[error("image is {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },

    /// Not a JPEG, PNG or WebP file (`detected` names what it looks like, if known).
    #[error("unsupported image format ({detected}); expected JPEG, PNG or WebP")]
    UnsupportedFormat { detected: &'static str },

    /// A supported format using a feature this decoder does not handle
    /// (12-bit JPEG, for example).
    #[error("unsupported {format:?} feature: {reason}")]
    UnsupportedFeature { format: Format, reason: String },

    /// The file ends before the image data does.
    #[error("{format:?} image is truncated")]
    Truncated { format: Format },

    /// The file is damaged or does not follow its format.
    #[error("corrupt {format:?} image: {reason}")]
    Corrupt { format: Format, reason: String },

    /// A header declares a zero width or height.
    #[error("{format:?} image has an empty dimension ({width}x{height})")]
    EmptyImage {
        format: Format,
        width: u32,
        height: u32,
    },

    /// Thumbnail parameters that cannot be honoured (both sides 0, quality outside
    /// 1..=100, a side past what the output format can store, ...).
    #[error("invalid thumbnail: {reason}")]
    InvalidThumbnail { reason: String },

    /// The thumbnail would have more pixels than allowed (its size can depend on the
    /// photo's, when one side is derived or enlarging is on).
    #[error("thumbnail would be {width}x{height} pixels, more than the limit of {limit} pixels")]
    OutputTooLarge { width: u32, height: u32, limit: u64 },

    /// A bug or resource failure inside a codec or the resizer, not the caller's input.
    #[error("internal imaging error: {reason}")]
    Internal { reason: String },
}

impl ImagingError {
    /// Stable code for API responses and metrics; never changes once published.
    pub fn code(&self) -> &'static str {
        match self {
            ImagingError::TooManyBytes { .. } => "image_too_large",
            ImagingError::TooManyPixels { .. } => "too_many_pixels",
            ImagingError::UnsupportedFormat { .. } => "unsupported_format",
            ImagingError::UnsupportedFeature { .. } => "unsupported_image_feature",
            ImagingError::Truncated { .. } => "truncated_image",
            ImagingError::Corrupt { .. } => "corrupt_image",
            ImagingError::EmptyImage { .. } => "empty_image",
            ImagingError::InvalidThumbnail { .. } => "invalid_thumbnail",
            ImagingError::OutputTooLarge { .. } => "output_too_large",
            ImagingError::Internal { .. } => "internal_imaging_error",
        }
    }

    /// True when the input itself is at fault (a 4xx), false for our own failures.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, ImagingError::Internal { .. })
    }

    pub(crate) fn corrupt(format: Format, reason: impl Into<String>) -> Self {
        ImagingError::Corrupt {
            format,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_distinct() {
        let all = [
            ImagingError::TooManyBytes { bytes: 2, limit: 1 },
            ImagingError::TooManyPixels {
                width: 2,
                height: 2,
                limit: 1,
            },
            ImagingError::UnsupportedFormat { detected: "gif" },
            ImagingError::UnsupportedFeature {
                format: Format::Jpeg,
                reason: "12-bit".into(),
            },
            ImagingError::Truncated {
                format: Format::Png,
            },
            ImagingError::corrupt(Format::Webp, "bad"),
            ImagingError::EmptyImage {
                format: Format::Png,
                width: 0,
                height: 1,
            },
            ImagingError::InvalidThumbnail { reason: "x".into() },
            ImagingError::OutputTooLarge {
                width: 2,
                height: 2,
                limit: 1,
            },
            ImagingError::Internal { reason: "x".into() },
        ];
        let mut codes: Vec<_> = all.iter().map(ImagingError::code).collect();
        for code in &codes {
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
