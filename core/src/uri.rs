//! URI templates ([RFC 6570]) as the DSL uses them in endpoints that are not runtime
//! expressions: `https://petstore.swagger.io/v2/pet/{petId}` takes `petId` from the top-level
//! fields of the task input.
//!
//! Expansion is done by `iri-string`'s template processor (all four RFC 6570 levels); this
//! module maps JSON onto RFC 6570 values: `null` is undefined, strings are used as they are,
//! numbers and booleans as their JSON text, arrays are lists and objects associative arrays.
//!
//! [RFC 6570]: https://www.rfc-editor.org/rfc/rfc6570

use std::fmt;

use iri_string::spec::UriSpec;
use iri_string::template::context::{Context, Visitor};
use iri_string::template::UriTemplateStr;
use serde_json::Value;

/// A URI template could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The template is not valid RFC 6570, or a value does not suit its operator (a prefix
    /// modifier such as `{var:3}` applied to a list).
    #[error("invalid uri template: {message}")]
    Invalid {
        /// What is wrong, with the byte position where it was found.
        message: String,
    },
}

impl UriError {
    fn from_template(e: iri_string::template::Error) -> Self {
        let text = e.to_string();
        // The crate prefixes its own "invalid URI template: "; ours says it already.
        let message = text
            .strip_prefix("invalid URI template: ")
            .unwrap_or(&text)
            .to_string();
        UriError::Invalid { message }
    }
}

/// Expands the RFC 6570 `template` with variables taken from the top-level fields of `vars`.
///
/// A variable missing from `vars` (or `null`, or any variable when `vars` is not an object)
/// is undefined and expands to nothing, as the RFC says. Values are percent-encoded as the
/// operator requires: `{var}` encodes reserved characters, `{+var}` and `{#var}` keep them.
pub fn expand_template(template: &str, vars: &Value) -> Result<String, UriError> {
    let template = UriTemplateStr::new(template).map_err(UriError::from_template)?;
    let context = JsonContext(vars);
    let expanded = template
        .expand::<UriSpec, _>(&context)
        .map_err(UriError::from_template)?;
    Ok(expanded.to_string())
}

/// Whether `s` contains an RFC 6570 expression (`{...}`), so that it needs expanding.
pub fn is_template(s: &str) -> bool {
    s.find('{').is_some_and(|open| s[open..].contains('}'))
}

struct JsonContext<'a>(&'a Value);

impl Context for JsonContext<'_> {
    fn visit<V: Visitor>(&self, visitor: V) -> V::Result {
        let value = match self.0 {
            Value::Object(o) => o.get(visitor.var_name().as_str()),
            _ => None,
        };
        match value {
            None | Some(Value::Null) => visitor.visit_undefined(),
            Some(Value::Array(items)) => visitor.visit_list_direct(items.iter().map(Text)),
            Some(Value::Object(entries)) => {
                visitor.visit_assoc_direct(entries.iter().map(|(k, v)| (k, Text(v))))
            }
            Some(scalar) => visitor.visit_string(Text(scalar)),
        }
    }
}

/// A JSON value as template text: a string's characters, anything else as JSON.
struct Text<'a>(&'a Value);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::String(s) => f.write_str(s),
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expand(t: &str, vars: Value) -> String {
        expand_template(t, &vars).unwrap()
    }

    #[test]
    fn dsl_endpoints() {
        let base = "https://petstore.swagger.io/v2/pet/{petId}";
        assert_eq!(
            expand(base, json!({"petId": 1})),
            "https://petstore.swagger.io/v2/pet/1"
        );
        assert_eq!(
            expand(
                "https://petstore.swagger.io/v2/pet/findByStatus?status={status}",
                json!({"status": "available"})
            ),
            "https://petstore.swagger.io/v2/pet/findByStatus?status=available"
        );
        assert_eq!(
            expand("https://example.com/no/vars", json!({})),
            "https://example.com/no/vars"
        );
    }

    #[test]
    fn simple_expansion_encodes_reserved_characters() {
        let vars = json!({"q": "a b/c?d", "u": "héllo", "p": "/a/b"});
        assert_eq!(expand("/s/{q}", vars.clone()), "/s/a%20b%2Fc%3Fd");
        assert_eq!(expand("/s/{u}", vars.clone()), "/s/h%C3%A9llo");
        assert_eq!(expand("/s{+p}", vars.clone()), "/s/a/b");
        assert_eq!(expand("/s{#p}", vars), "/s#/a/b");
    }

    #[test]
    fn scalars_render_as_text() {
        let vars = json!({"n": 42, "f": 1.5, "neg": -3, "b": true});
        assert_eq!(expand("{n}/{f}/{neg}/{b}", vars), "42/1.5/-3/true");
    }

    #[test]
    fn missing_and_null_are_undefined() {
        assert_eq!(expand("/a/{missing}/b", json!({})), "/a//b");
        assert_eq!(expand("/a/{x}", json!({"x": null})), "/a/");
        assert_eq!(expand("/a/{x}", json!("not an object")), "/a/");
        assert_eq!(expand("/a/{x}", Value::Null), "/a/");
    }

    #[test]
    fn query_and_lists() {
        let vars =
            json!({"a": 1, "b": "x y", "list": ["red", "green"], "keys": {"k": "v", "n": 2}});
        assert_eq!(expand("/p{?a,b,missing}", vars.clone()), "/p?a=1&b=x%20y");
        assert_eq!(expand("/p{?list}", vars.clone()), "/p?list=red,green");
        assert_eq!(expand("/p{?list*}", vars.clone()), "/p?list=red&list=green");
        assert_eq!(expand("/p{?keys*}", vars.clone()), "/p?k=v&n=2");
        assert_eq!(expand("/p{/list*}", vars.clone()), "/p/red/green");
        assert_eq!(expand("{&a}", vars), "&a=1");
    }

    #[test]
    fn invalid_templates_are_errors() {
        let e = expand_template("/a/{unclosed", &json!({})).unwrap_err();
        assert!(e.to_string().starts_with("invalid uri template: "), "{e}");
        assert!(expand_template("/a/{x:3}", &json!({"x": [1, 2]})).is_err());
    }

    #[test]
    fn detects_templates() {
        assert!(is_template("/pet/{petId}"));
        assert!(!is_template("/pet/1"));
        assert!(!is_template("/pet/}{"));
    }
}
