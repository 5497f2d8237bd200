//! Typed parameters: declared once with a type, bounds and a description,
//! then set; every accepted change bumps a version and leaves an event.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// Type and bounds of a parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParamKind {
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A finite float in `min..=max`.
    Float {
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// A string of at most `max_len` bytes.
    String {
        /// Longest allowed value, bytes.
        max_len: u32,
    },
    /// One of a fixed set of names.
    Enum {
        /// Allowed values, in display order.
        choices: Vec<String>,
    },
}

impl ParamKind {
    /// The type, without bounds.
    pub fn param_type(&self) -> ParamType {
        match self {
            ParamKind::Bool => ParamType::Bool,
            ParamKind::Int { .. } => ParamType::Int,
            ParamKind::Float { .. } => ParamType::Float,
            ParamKind::String { .. } => ParamType::String,
            ParamKind::Enum { .. } => ParamType::Enum,
        }
    }

    /// Whether `value` has this type and lies within these bounds.
    pub fn admits(&self, value: &ParamValue) -> bool {
        match (self, value) {
            (ParamKind::Bool, ParamValue::Bool(_)) => true,
            (ParamKind::Int { min, max }, ParamValue::Int(v)) => min <= v && v <= max,
            (ParamKind::Float { min, max }, ParamValue::Float(v)) => v.is_finite() && *min <= *v && *v <= *max,
            (ParamKind::String { max_len }, ParamValue::String(s)) => {
                u64::try_from(s.len()).is_ok_and(|len| len <= u64::from(*max_len))
            }
            (ParamKind::Enum { choices }, ParamValue::Enum(s)) => choices.iter().any(|c| c == s),
            _ => false,
        }
    }
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamKind::Bool => f.write_str("bool"),
            ParamKind::Int { min, max } => write!(f, "int in {min}..={max}"),
            ParamKind::Float { min, max } => write!(f, "float in {min}..={max}"),
            ParamKind::String { max_len } => write!(f, "string of at most {max_len} bytes"),
            ParamKind::Enum { choices } => write!(f, "one of {}", choices.join("|")),
        }
    }
}

/// A parameter's type, without bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParamType {
    /// Boolean.
    Bool,
    /// Integer.
    Int,
    /// Float.
    Float,
    /// String.
    String,
    /// Enum.
    Enum,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Bool => "bool",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::String => "string",
            ParamType::Enum => "enum",
        })
    }
}

/// A parameter value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParamValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float (never NaN or infinite once accepted).
    Float(f64),
    /// String.
    String(String),
    /// One of an enum's choices.
    Enum(String),
}

impl ParamValue {
    /// Its type.
    pub fn param_type(&self) -> ParamType {
        match self {
            ParamValue::Bool(_) => ParamType::Bool,
            ParamValue::Int(_) => ParamType::Int,
            ParamValue::Float(_) => ParamType::Float,
            ParamValue::String(_) => ParamType::String,
            ParamValue::Enum(_) => ParamType::Enum,
        }
    }

    /// The float, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Float(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::String(v) | ParamValue::Enum(v) => write!(f, "{v:?}"),
        }
    }
}

/// A declared parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Param {
    /// Dotted name, e.g. `drive.max_speed_mps`.
    pub name: String,
    /// What it controls, for the operator.
    pub description: String,
    /// Type and bounds.
    pub kind: ParamKind,
    /// Current value; always admitted by `kind`.
    pub value: ParamValue,
    /// The global parameter version of its latest change (0 for built-ins).
    pub version: u64,
}

/// One accepted declaration or change, as kept in the recent-changes ring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParamChange {
    /// Global parameter version after the change.
    pub version: u64,
    /// Which parameter.
    pub name: String,
    /// Value before; `None` for a declaration.
    pub old: Option<ParamValue>,
    /// Value after.
    pub new: ParamValue,
    /// Raft log index of the entry that made the change.
    pub index: u64,
    /// Leader timestamp of that entry.
    pub timestamp_ms: u64,
}

/// Name of the built-in parameter that sets the rover's top speed before
/// degradation policies scale it.
pub const MAX_SPEED_PARAM: &str = "drive.max_speed_mps";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_admit_only_their_type_within_bounds() {
        let float = ParamKind::Float { min: 0.0, max: 1.0 };
        let cases = [
            (float.clone(), ParamValue::Float(0.5), true),
            (float.clone(), ParamValue::Float(f64::NAN), false),
            (float.clone(), ParamValue::Float(1.5), false),
            (float, ParamValue::Int(1), false),
            (ParamKind::Int { min: -1, max: 1 }, ParamValue::Int(-1), true),
            (
                ParamKind::String { max_len: 3 },
                ParamValue::String("abcd".to_owned()),
                false,
            ),
            (
                ParamKind::Enum {
                    choices: vec!["a".to_owned()],
                },
                ParamValue::Enum("a".to_owned()),
                true,
            ),
            (
                ParamKind::Enum {
                    choices: vec!["a".to_owned()],
                },
                ParamValue::String("a".to_owned()),
                false,
            ),
        ];
        for (kind, value, expected) in cases {
            assert_eq!(kind.admits(&value), expected, "{kind} admits {value}?");
        }
    }
}
