-- wrk: every request asks for a document with a fresh random 32-byte nonce.
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)

local hex = {}
for i = 0, 255 do hex[i] = string.format("%02x", i) end

request = function()
    local nonce = {}
    for i = 1, 32 do nonce[i] = hex[math.random(0, 255)] end
    return wrk.format("GET", "/attestation?nonce=" .. table.concat(nonce))
end
