//! `settings!`: the one definition a program writes for its settings.

/// Defines a settings struct and everything read or shown from it.
///
/// ```ignore
/// postern_settings::settings! {
///     /// The server's settings.
///     pub struct ServerConfig (prefix "POSTERN_", config "POSTERN_CONFIG") {
///         /// Where the store lives.            <- the flag's help
///         pub data_dir: PathBuf,                <- no default: required
///         /// HTTP API.
///         pub http: SocketAddr = "127.0.0.1:8080".parse().unwrap_or(...),
///         /// Heartbeat interval.
///         #[serde(with = "humantime_serde")]    <- serde attributes, after the doc
///         #[setting(env = "POSTERN_SYNC_RATE")] <- a variable name other than PREFIX + KEY
///         pub sync_rate: Duration = Duration::from_secs(10),
///         /// Database URL.
///         #[setting(secret)]                    <- masked when printed and in Debug
///         pub database: Option<String> = None,
///     }
/// }
/// ```
///
/// Generates: the struct (`Serialize`, `Deserialize` with unknown keys refused, `Clone`,
/// `PartialEq`), `Default` (the defaults; a required setting at its type's empty value,
/// which `load` never returns), a `Debug` that masks secrets, and [`crate::Settings`] with one
/// [`crate::Spec`] per field. The flag is `--key-with-dashes`, the variable `PREFIX` +
/// `KEY`, the file key `key`.
#[macro_export]
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident (prefix $prefix:literal, config $config_env:literal) {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($serde:tt)*)])*
                $(#[setting($($mark:tt)*)])?
                $fvis:vis $field:ident : $ty:ty $(= $default:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, $crate::__serde::Serialize, $crate::__serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                $(#[serde($($serde)*)])*
                $fvis $field: $ty,
            )*
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self {
                    $($field: $crate::__default!($($default)?),)*
                }
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut out = f.debug_struct(stringify!($name));
                $(
                    if $crate::is_secret::<Self>(stringify!($field)) {
                        out.field(stringify!($field), &$crate::Masked);
                    } else {
                        out.field(stringify!($field), &self.$field);
                    }
                )*
                out.finish()
            }
        }

        impl $crate::Settings for $name {
            const SPECS: &'static [$crate::Spec] = &[
                $(
                    $crate::__spec!(
                        $crate::Spec::new(
                            stringify!($field),
                            concat!($($doc, "\n",)*),
                            $crate::__required!($($default)?),
                        );
                        $($($mark)*)?
                    ),
                )*
            ];
            const ENV_PREFIX: &'static str = $prefix;
            const CONFIG_ENV: &'static str = $config_env;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __default {
    () => {
        ::core::default::Default::default()
    };
    ($e:expr) => {
        $e
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __required {
    () => {
        true
    };
    ($e:expr) => {
        false
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __spec {
    ($spec:expr;) => {
        $spec
    };
    ($spec:expr; secret $(, $($rest:tt)*)?) => {
        $crate::__spec!($spec.secret(); $($($rest)*)?)
    };
    ($spec:expr; env = $env:literal $(, $($rest:tt)*)?) => {
        $crate::__spec!($spec.env($env); $($($rest)*)?)
    };
}
