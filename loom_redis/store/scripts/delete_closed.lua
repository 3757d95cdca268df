-- Delete one closed workflow: its history, meta, close notice and request ids, and its
-- entries in every index (by start time, by status, its owner's, by expiry). Run by the
-- retention sweep (`expired`: its retention ended by the deadline, its score in the
-- expiry index) and by `loom prune` (`closed-before`: it closed by the deadline, its
-- score in its status index). It checks here, under the script, what the caller read:
-- an open workflow is never deleted, however old (a later start may have reused the id
-- of an expired one), and a second run finds nothing to do.
-- Returns {'deleted', status}, {'open', status}, {'kept', status} or {'missing', ''}.
-- KEYS: meta, history, close notice, request ids, started index, expiry index
-- ARGV: workflow id, status index prefix, owner index prefix, what to check against the
--       deadline ('expired' or 'closed-before'), deadline (ms), status ('' for any)
local meta, expiry, workflow_id = KEYS[1], KEYS[6], ARGV[1]
expect_types({meta, 'hash', KEYS[5], 'zset', expiry, 'zset'})
local found = redis.call('HMGET', meta, 'status', 'owner')
local status, owner = found[1], found[2]
if not status or not TERMINAL[status] then
  -- An expiry entry of an earlier workflow of this id, deleted otherwise or started
  -- again: the open one gets its own when it closes.
  redis.call('ZREM', expiry, workflow_id)
  if not status then return {'missing', ''} end
  return {'open', status}
end
if ARGV[6] ~= '' and status ~= ARGV[6] then return {'kept', status} end
local by_status = ARGV[2] .. status
local scored = by_status
if ARGV[4] == 'expired' then scored = expiry end
local score = redis.call('ZSCORE', scored, workflow_id)
if not score or tonumber(score) > tonumber(ARGV[5]) then return {'kept', status} end
local indexes = {by_status, 'zset'}
if owner and owner ~= '' then
  indexes[3] = ARGV[3] .. owner
  indexes[4] = 'zset'
end
expect_types(indexes)
-- UNLINK: a long history is freed off the main thread, not while the script runs.
redis.call('UNLINK', meta, KEYS[2], KEYS[3], KEYS[4])
for _, index in ipairs({KEYS[5], expiry, by_status}) do redis.call('ZREM', index, workflow_id) end
if owner and owner ~= '' then redis.call('ZREM', ARGV[3] .. owner, workflow_id) end
return {'deleted', status}
