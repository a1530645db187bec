-- record: a turn's whole write in one script, where the chat's keys and the caller's counters
-- can be written together (a Redis that is not a Cluster, where they may sit on different
-- nodes): append_turn, then add_usage, each on its own part of KEYS and ARGV.
--
-- KEYS: append_turn's keys, then add_usage's
-- ARGV: 1 how many of KEYS are append_turn's, 2 how many of the arguments after these two
--       are append_turn's; then append_turn's arguments, then add_usage's
-- Returns {append_turn's result, add_usage's result}.
--
-- Safe to run twice: each part is, by its own marker.
local function slice(t, from, to)
  local part = {}
  for i = from, to do part[#part + 1] = t[i] end
  return part
end
local keys, args = tonumber(ARGV[1]), tonumber(ARGV[2])
local stored = append_turn(slice(KEYS, 1, keys), slice(ARGV, 3, 2 + args))
-- A chat its turn did not make is in the index of births already (a refused turn made
-- nothing either).
local known = not made_chat
return {stored, add_usage(slice(KEYS, keys + 1, #KEYS), slice(ARGV, 3 + args, #ARGV), known)}
