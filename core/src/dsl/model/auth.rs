//! Authentication policies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::serde_glue::some;

/// An authentication policy: exactly one scheme, or a reference to one with `use`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AuthenticationPolicy {
    /// A name in `use.authentications`.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// HTTP basic.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// Bearer token.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    /// HTTP digest (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<BasicAuth>,
    /// OAuth2 (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<Box<OAuth2Auth>>,
    /// OpenID Connect (parsed; not supported yet); `endpoints` is not allowed here.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Box<OAuth2Auth>>,
}

/// Username/password, or a secret holding them (`use`): exactly one of the two forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A secret with `username` and `password`.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A bearer token, or a secret holding it (`use`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A secret with `token`.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// OAuth2 or OpenID Connect: inline properties, or a secret holding them (`use`), not both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Auth {
    /// A secret holding the configuration.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The authority (a URI).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// The grant type.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<OAuth2Grant>,
    /// The client.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<OAuth2Client>,
    /// The token request.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<OAuth2TokenRequest>,
    /// Accepted issuers.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuers: Option<Vec<String>>,
    /// Requested scopes.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Requested audiences.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// User name (password grant).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (password grant).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Subject token (token exchange).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<OAuth2Token>,
    /// Actor token (token exchange).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<OAuth2Token>,
    /// Endpoint paths (OAuth2 only).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<OAuth2Endpoints>,
}

/// OAuth2 grant types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum OAuth2Grant {
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    #[serde(rename = "password")]
    Password,
    #[serde(rename = "refresh_token")]
    RefreshToken,
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
}

/// An OAuth2 client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Client {
    /// Client id.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Client secret.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A signed JWT assertion.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
    /// How the client authenticates (default `client_secret_post`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<OAuth2ClientAuthentication>,
}

/// How an OAuth2 client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum OAuth2ClientAuthentication {
    ClientSecretBasic,
    ClientSecretPost,
    ClientSecretJwt,
    PrivateKeyJwt,
    None,
}

/// An OAuth2 token request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2TokenRequest {
    /// `application/x-www-form-urlencoded` (default) or `application/json`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<OAuth2RequestEncoding>,
}

/// The encoding of an OAuth2 token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum OAuth2RequestEncoding {
    #[serde(rename = "application/x-www-form-urlencoded")]
    FormUrlEncoded,
    #[serde(rename = "application/json")]
    Json,
}

/// A security token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Token {
    /// The token.
    pub token: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_: String,
}

/// OAuth2 endpoint paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Endpoints {
    /// Token endpoint (default `/oauth2/token`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Revocation endpoint (default `/oauth2/revoke`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<String>,
    /// Introspection endpoint (default `/oauth2/introspect`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection: Option<String>,
}
