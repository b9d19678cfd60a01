package router

import "strings"

// funcKind is the router's verdict on one function name.
type funcKind uint8

const (
	funcUnknown  funcKind = iota // not known to be read-only: primary
	funcSafe                     // reads only (built-in list, read_functions, or catalog says not volatile)
	funcWrite                    // writes or needs the primary (built-in list or write_functions)
	funcVolatile                 // the catalog says VOLATILE: it may write
	funcProbe                    // a writability probe: answer it from the primary
	funcArgs                     // depends on the arguments: set_config, current_setting
)

// funcClass judges a function. full is the name as written and folded
// ("public.f", "f"); last is its last part, folded; builtin is true when the
// name is unqualified or pg_catalog-qualified, i.e. may be a built-in.
//
// Order matters: the write lists win over everything, so a configured or
// built-in writer is never excused by a stale catalog or a read list.
func (c *Classifier) funcClass(full, last string, builtin bool) funcKind {
	lower := asciiLower(last)
	if builtin {
		switch lower {
		case "set_config", "current_setting":
			return funcArgs
		case "pg_is_in_recovery":
			return funcProbe
		}
	}
	if builtinWriter(lower) {
		return funcWrite
	}
	if len(c.writeFuncs) > 0 {
		if _, ok := c.writeFuncs[asciiLower(full)]; ok {
			return funcWrite
		}
		if _, ok := c.writeFuncs[lower]; ok {
			return funcWrite
		}
	}
	if builtin {
		if _, ok := c.safeFuncs[last]; ok {
			return funcSafe
		}
	}
	if _, ok := c.readFuncs[full]; ok {
		return funcSafe
	}
	if c.volatile != nil {
		if v, known := c.volatile(full); known {
			if v {
				return funcVolatile
			}
			return funcSafe
		}
	}
	return funcUnknown
}

// builtinWriter reports the built-in functions that write, take session or
// cluster-wide effect, or only work on the primary. It matches the last part
// of the name whatever the schema, which errs towards the primary.
func builtinWriter(name string) bool {
	switch name {
	case "nextval", "setval", "currval", "lastval",
		"pg_notify",
		"txid_current", "txid_current_if_assigned",
		"pg_current_xact_id", "pg_current_xact_id_if_assigned",
		"set_config",
		"lowrite", "loread",
		"dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_send_query",
		"pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
		"pg_drop_replication_slot", "pg_replication_slot_advance",
		"pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
		"pg_logical_slot_get_changes", "pg_logical_slot_get_binary_changes",
		"pg_logical_slot_peek_changes", "pg_logical_slot_peek_binary_changes",
		"pg_logical_emit_message", "pg_sync_replication_slots",
		"pg_terminate_backend", "pg_cancel_backend", "pg_signal_backend",
		"pg_log_backend_memory_contexts",
		"pg_switch_wal", "pg_switch_xlog", "pg_reload_conf", "pg_promote",
		"pg_rotate_logfile", "pg_create_restore_point",
		"pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
		"pg_wal_replay_pause", "pg_wal_replay_resume",
		"pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
		"pg_walfile_name", "pg_walfile_name_offset",
		"pg_import_system_collations", "pg_extension_config_dump", "pg_nextoid",
		"pg_restore_relation_stats", "pg_restore_attribute_stats",
		"pg_clear_relation_stats", "pg_clear_attribute_stats",
		"pg_set_relation_stats", "pg_set_attribute_stats",
		"brin_summarize_new_values", "brin_summarize_range", "brin_desummarize_range",
		"gin_clean_pending_list",
		"pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync",
		"pg_truncate_visibility_map":
		return true
	}
	switch {
	case strings.HasPrefix(name, "pg_advisory_"), strings.HasPrefix(name, "pg_try_advisory_"):
		return true
	case strings.HasPrefix(name, "lo_"):
		return name != "lo_get" // lo_create, lo_import, lo_open, lo_put, lo_unlink, lo_from_bytea, …
	case strings.HasPrefix(name, "pg_replication_origin_"),
		strings.HasPrefix(name, "pg_stat_reset"),
		strings.HasPrefix(name, "pg_stat_statements_reset"),
		strings.HasPrefix(name, "binary_upgrade_"):
		return true
	}
	return false
}

// funcPins returns the session state a call to a built-in creates or
// releases (see Statement.Pins).
func funcPins(lower string) (pin, unpin string) {
	switch lower {
	case "nextval", "setval":
		return PinNextval, ""
	case "pg_advisory_lock", "pg_advisory_lock_shared",
		"pg_try_advisory_lock", "pg_try_advisory_lock_shared":
		return PinAdvisoryLock, ""
	case "pg_advisory_unlock_all":
		return "", PinAdvisoryLock
	}
	return "", ""
}

// writabilityProbeGUC reports the settings clients read to learn whether a
// server accepts writes (libpq target_session_attrs, pgx): answered by the
// primary, so they see a writable server.
func writabilityProbeGUC(name string) bool {
	return equalFold(name, "transaction_read_only") || equalFold(name, "in_hot_standby")
}

// notAFunction reports words that PostgreSQL never takes as a function name
// when unquoted — reserved and column-name keywords — so "word (" is syntax
// (IN (, ANY (, CAST (, COALESCE (, numeric(10,2) …) and calls nothing that
// could write. Keywords that can name functions (LEFT, JOIN, FILTER, ROLLUP)
// are not here: they are judged as calls.
func notAFunction(w string) bool {
	switch w {
	// reserved keywords
	case "all", "analyse", "analyze", "and", "any", "array", "as", "asc",
		"asymmetric", "both", "case", "cast", "check", "collate", "column",
		"constraint", "create", "current_catalog", "current_date", "current_role",
		"current_time", "current_timestamp", "current_user", "default",
		"deferrable", "desc", "distinct", "do", "else", "end", "except", "false",
		"fetch", "for", "foreign", "from", "grant", "group", "having", "in",
		"initially", "intersect", "into", "lateral", "leading", "limit",
		"localtime", "localtimestamp", "not", "null", "offset", "on", "only", "or",
		"order", "placing", "primary", "references", "returning", "select",
		"session_user", "some", "symmetric", "system_user", "table", "then", "to",
		"trailing", "true", "union", "unique", "user", "using", "variadic", "when",
		"where", "window", "with":
		return true
	// column-name keywords: special syntax or type names
	case "between", "bigint", "bit", "boolean", "char", "character", "coalesce",
		"dec", "decimal", "exists", "extract", "float", "greatest", "grouping",
		"inout", "int", "integer", "interval", "json", "json_array",
		"json_arrayagg", "json_exists", "json_object", "json_objectagg",
		"json_query", "json_scalar", "json_serialize", "json_table", "json_value",
		"least", "merge_action", "national", "nchar", "none", "normalize",
		"nullif", "numeric", "out", "overlay", "position", "precision", "real",
		"row", "setof", "smallint", "substring", "time", "timestamp", "treat",
		"trim", "values", "varchar", "xmlattributes", "xmlconcat", "xmlelement",
		"xmlexists", "xmlforest", "xmlnamespaces", "xmlparse", "xmlpi", "xmlroot",
		"xmlserialize", "xmltable":
		return true
	}
	return false
}

// builtinSafeFuncs lists built-in functions that read only: immutable and
// stable ones in common use, plus volatile ones that change nothing a
// replica cannot serve (random, clock_timestamp, gen_random_uuid, pg_sleep…).
// Every name here must be unable to write, take a lock that matters, or need
// the primary. A built-in missing from the list is judged by the catalog
// (Options.Volatile) or, without one, sent to the primary.
func builtinSafeFuncs() []string {
	return []string{
		// aggregates and window functions
		"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg",
		"jsonb_agg", "json_object_agg", "jsonb_object_agg", "json_agg_strict",
		"jsonb_agg_strict", "json_object_agg_strict", "jsonb_object_agg_strict",
		"json_object_agg_unique", "jsonb_object_agg_unique", "bool_and", "bool_or",
		"every", "bit_and", "bit_or", "bit_xor", "stddev", "stddev_pop",
		"stddev_samp", "variance", "var_pop", "var_samp", "corr", "covar_pop",
		"covar_samp", "regr_avgx", "regr_avgy", "regr_count", "regr_intercept",
		"regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
		"percentile_cont", "percentile_disc", "mode", "rank", "dense_rank",
		"percent_rank", "cume_dist", "row_number", "ntile", "lag", "lead",
		"first_value", "last_value", "nth_value", "xmlagg", "range_agg",
		"range_intersect_agg", "any_value",
		// conditionals that parse as calls
		"coalesce", "nullif", "greatest", "least", "num_nulls", "num_nonnulls",
		// math
		"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt",
		"exp", "ln", "log", "log10", "power", "pow", "mod", "div", "pi", "degrees",
		"radians", "sin", "cos", "tan", "cot", "asin", "acos", "atan", "atan2",
		"sind", "cosd", "tand", "cotd", "asind", "acosd", "atand", "atan2d",
		"sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "width_bucket", "gcd",
		"lcm", "factorial", "scale", "min_scale", "trim_scale", "erf", "erfc",
		"random", "random_normal", "setseed",
		// strings
		"lower", "upper", "initcap", "length", "char_length", "character_length",
		"octet_length", "bit_length", "concat", "concat_ws", "format", "left",
		"right", "lpad", "rpad", "ltrim", "rtrim", "btrim", "substr", "substring",
		"position", "strpos", "replace", "repeat", "reverse", "split_part",
		"string_to_array", "string_to_table", "array_to_string", "regexp_replace",
		"regexp_match", "regexp_matches", "regexp_split_to_array",
		"regexp_split_to_table", "regexp_count", "regexp_instr", "regexp_like",
		"regexp_substr", "translate", "ascii", "chr", "md5", "sha224", "sha256",
		"sha384", "sha512", "encode", "decode", "to_hex", "to_bin", "to_oct",
		"quote_ident", "quote_literal", "quote_nullable", "starts_with", "unistr",
		"normalize", "is_normalized", "overlay", "convert", "convert_from",
		"convert_to", "to_ascii", "parse_ident", "similar_to_escape",
		"similar_escape", "textlen", "texticlike", "textlike", "get_byte",
		"set_byte", "get_bit", "set_bit", "bit_count", "crc32", "crc32c",
		"casefold", "text", "like_escape",
		// date and time
		"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
		"timeofday", "date_trunc", "date_part", "extract", "age", "make_date",
		"make_time", "make_timestamp", "make_timestamptz", "make_interval",
		"to_timestamp", "to_date", "to_char", "to_number", "justify_days",
		"justify_hours", "justify_interval", "isfinite", "date_bin", "timezone",
		"date_add", "date_subtract", "overlaps", "pg_sleep", "pg_sleep_for",
		"pg_sleep_until",
		// JSON
		"to_json", "to_jsonb", "json_build_object", "jsonb_build_object",
		"json_build_array", "jsonb_build_array", "json_object", "jsonb_object",
		"array_to_json", "row_to_json", "json_array_length", "jsonb_array_length",
		"json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
		"json_extract_path", "jsonb_extract_path", "json_extract_path_text",
		"jsonb_extract_path_text", "json_object_keys", "jsonb_object_keys",
		"json_populate_record", "jsonb_populate_record",
		"jsonb_populate_record_valid", "json_populate_recordset",
		"jsonb_populate_recordset", "json_array_elements", "jsonb_array_elements",
		"json_array_elements_text", "jsonb_array_elements_text", "json_typeof",
		"jsonb_typeof", "json_to_record", "jsonb_to_record", "json_to_recordset",
		"jsonb_to_recordset", "json_strip_nulls", "jsonb_strip_nulls", "jsonb_set",
		"jsonb_set_lax", "jsonb_insert", "jsonb_pretty", "jsonb_path_exists",
		"jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array",
		"jsonb_path_query_first", "jsonb_path_exists_tz", "jsonb_path_match_tz",
		"jsonb_path_query_tz", "jsonb_path_query_array_tz",
		"jsonb_path_query_first_tz", "jsonb_concat", "jsonb_contains",
		"jsonb_exists", "json_scalar", "json_serialize",
		// arrays and sets
		"array_length", "array_lower", "array_upper", "array_dims", "array_ndims",
		"array_append", "array_prepend", "array_cat", "array_position",
		"array_positions", "array_remove", "array_replace", "array_fill",
		"array_sample", "array_shuffle", "array_reverse", "array_sort",
		"trim_array", "cardinality", "unnest", "generate_series",
		"generate_subscripts", "array_to_tsvector",
		// ranges
		"lower_inc", "upper_inc", "lower_inf", "upper_inf", "isempty",
		"range_merge", "multirange", "int4range", "int8range", "numrange",
		"tsrange", "tstzrange", "daterange",
		// full text search
		"to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
		"websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline",
		"setweight", "strip", "tsvector_to_array", "numnode", "querytree",
		"ts_rewrite", "ts_delete", "ts_filter", "ts_lexize", "ts_debug",
		"ts_parse", "ts_token_type", "get_current_ts_config",
		// network
		"host", "hostmask", "masklen", "netmask", "network", "family", "abbrev",
		"broadcast", "set_masklen", "inet_same_family", "inet_merge", "macaddr8_set7bit",
		// uuid
		"gen_random_uuid", "uuidv4", "uuidv7", "uuid_extract_timestamp",
		"uuid_extract_version", "uuid_generate_v1", "uuid_generate_v1mc",
		"uuid_generate_v3", "uuid_generate_v4", "uuid_generate_v5", "uuid_nil",
		"uuid_ns_dns", "uuid_ns_url", "uuid_ns_oid", "uuid_ns_x500",
		// type conversion written as a call
		"int2", "int4", "int8", "float4", "float8", "bool", "date", "bpchar",
		"name", "oid", "regclass", "regtype", "regproc", "regprocedure",
		"regnamespace", "regrole", "to_regclass", "to_regtype", "to_regproc",
		"to_regprocedure", "to_regnamespace", "to_regrole", "to_regoper",
		"to_regoperator", "to_regcollation", "to_regtypemod", "format_type",
		"inet", "cidr", "macaddr", "money", "bytea", "uuid", "xml", "jsonb",
		// XML
		"xmlcomment", "xmltext", "xpath", "xpath_exists", "xml_is_well_formed",
		"xml_is_well_formed_document", "xml_is_well_formed_content",
		"xmlexists",
		// session and system information
		"version", "current_database", "current_schema", "current_schemas",
		"current_query", "pg_backend_pid", "inet_server_addr", "inet_server_port",
		"inet_client_addr", "inet_client_port", "pg_postmaster_start_time",
		"pg_conf_load_time", "pg_my_temp_schema", "pg_is_other_temp_schema",
		"pg_trigger_depth", "pg_jit_available", "row_security_active",
		"pg_client_encoding", "pg_encoding_to_char", "pg_char_to_encoding",
		"pg_typeof", "pg_collation_for", "pg_column_size", "pg_column_compression",
		"pg_column_toast_chunk_id", "pg_database_size", "pg_relation_size",
		"pg_table_size", "pg_indexes_size", "pg_total_relation_size",
		"pg_tablespace_size", "pg_size_pretty", "pg_size_bytes",
		"pg_relation_filenode", "pg_relation_filepath", "pg_filenode_relation",
		"pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible",
		"pg_operator_is_visible", "pg_opclass_is_visible", "pg_opfamily_is_visible",
		"pg_collation_is_visible", "pg_conversion_is_visible",
		"pg_statistics_obj_is_visible", "pg_ts_config_is_visible",
		"pg_ts_dict_is_visible", "pg_ts_parser_is_visible",
		"pg_ts_template_is_visible", "pg_get_viewdef", "pg_get_constraintdef",
		"pg_get_indexdef", "pg_get_functiondef", "pg_get_function_arguments",
		"pg_get_function_identity_arguments", "pg_get_function_result",
		"pg_get_function_arg_default", "pg_get_expr", "pg_get_userbyid",
		"pg_get_serial_sequence", "pg_get_triggerdef", "pg_get_ruledef",
		"pg_get_keywords", "pg_get_partkeydef", "pg_get_statisticsobjdef",
		"pg_get_statisticsobjdef_columns", "pg_get_statisticsobjdef_expressions",
		"pg_get_object_address", "pg_identify_object",
		"pg_identify_object_as_address", "pg_describe_object",
		"pg_get_catalog_foreign_keys", "pg_get_partition_constraintdef",
		"pg_get_replica_identity_index", "pg_options_to_table",
		"pg_index_column_has_property", "pg_index_has_property",
		"pg_indexam_has_property", "pg_tablespace_location",
		"pg_tablespace_databases", "pg_partition_tree", "pg_partition_ancestors",
		"pg_partition_root", "pg_settings_get_flags", "pg_input_is_valid",
		"pg_input_error_info", "obj_description", "col_description",
		"shobj_description", "has_any_column_privilege", "has_column_privilege",
		"has_database_privilege", "has_foreign_data_wrapper_privilege",
		"has_function_privilege", "has_language_privilege",
		"has_largeobject_privilege", "has_parameter_privilege",
		"has_schema_privilege", "has_sequence_privilege", "has_server_privilege",
		"has_table_privilege", "has_tablespace_privilege", "has_type_privilege",
		"pg_has_role", "acldefault", "aclexplode", "makeaclitem",
		"pg_blocking_pids", "pg_safe_snapshot_blocking_pids",
		"pg_notification_queue_usage", "pg_listening_channels",
		"pg_current_snapshot", "pg_snapshot_xmin", "pg_snapshot_xmax",
		"pg_snapshot_xip", "pg_visible_in_snapshot", "txid_current_snapshot",
		"txid_snapshot_xmin", "txid_snapshot_xmax", "txid_snapshot_xip",
		"txid_visible_in_snapshot", "pg_xact_commit_timestamp",
		"pg_last_committed_xact", "pg_last_wal_receive_lsn",
		"pg_last_wal_replay_lsn", "pg_last_xact_replay_timestamp",
		"pg_is_wal_replay_paused", "pg_get_wal_replay_pause_state",
		"pg_wal_lsn_diff", "pg_control_checkpoint", "pg_control_system",
		"pg_control_init", "pg_control_recovery", "pg_stat_clear_snapshot",
		"pg_stat_get_activity", "pg_stat_get_backend_pid",
		"pg_stat_get_backend_idset", "pg_stat_get_numscans",
		"pg_stat_get_tuples_returned", "pg_stat_get_live_tuples",
		"pg_stat_get_dead_tuples", "pg_stat_get_db_numbackends",
		"pg_stat_get_xact_commit", "pg_stat_get_xact_rollback",
		"pg_get_backend_memory_contexts", "pg_show_all_settings",
		"pg_show_all_file_settings", "pg_prepared_statement", "pg_cursor",
		"pg_available_extensions", "pg_available_extension_versions",
		"pg_timezone_names", "pg_timezone_abbrevs", "pg_lock_status",
		"pg_get_shmem_allocations", "pg_event_trigger_ddl_commands",
		"age", "mxid_age", "pg_xact_status", "txid_status",
	}
}
