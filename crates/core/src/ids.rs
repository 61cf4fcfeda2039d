use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7). Ids are identifiers, never secrets.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// The nil UUID (never a real id).
            pub const NIL: $name = $name(Uuid::nil());

            /// The UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Builds an id from a UUID read from storage.
            pub fn from_uuid(uuid: Uuid) -> Self {
                $name(uuid)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                $name(uuid)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;

            /// Parses the hyphenated lowercase form only: one spelling per id.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let uuid = Uuid::try_parse(s)
                    .map_err(|_| crate::Error::Malformed(format!("not a valid {}", stringify!($name))))?;
                if uuid.hyphenated().to_string() != s {
                    return Err(crate::Error::Malformed(format!("not a valid {}", stringify!($name))));
                }
                Ok($name(uuid))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0.hyphenated())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A workspace (tenant).
    WorkspaceId
);
id_type!(
    /// A registered application; its id is also its public `client_id` and the `aud` of its tokens.
    ApplicationId
);
id_type!(
    /// A user inside one workspace.
    UserId
);
id_type!(
    /// A login session: one signed-in device or browser (`sid` in tokens).
    SessionId
);

id_type!(
    /// An invitation to a workspace.
    InviteId
);
id_type!(
    /// A browser signed in to a workspace's hosted login (single sign-on).
    BrowserSessionId
);
id_type!(
    /// A pending authorization request of the hosted login.
    FlowId
);
id_type!(
    /// A refresh-token family: every token rotated from one code exchange.
    FamilyId
);
id_type!(
    /// A registered passkey (WebAuthn credential) of a user.
    PasskeyId
);
id_type!(
    /// An upstream identity provider of a workspace's hosted login.
    ProviderId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_their_canonical_form() {
        let id = WorkspaceId::new();
        assert_eq!(id.to_string().parse::<WorkspaceId>().unwrap(), id);
        assert!(id.to_string().to_uppercase().parse::<WorkspaceId>().is_err());
        assert!(id.as_uuid().simple().to_string().parse::<WorkspaceId>().is_err());
        assert!("../etc".parse::<WorkspaceId>().is_err());
    }
}
